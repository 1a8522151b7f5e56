from datetime import timedelta

from orchestrator import claims
from orchestrator.utc import utcnow


def test_only_the_first_claim_of_an_attempt_wins(mock_db):
    assert claims.claim_attempt(mock_db, "r1", 1, "pod-a", 90) is not None
    assert claims.claim_attempt(mock_db, "r1", 1, "pod-b", 90) is None
    assert claims.claim_attempt(mock_db, "r1", 2, "pod-b", 90) is not None
    assert mock_db.claims.find_one({"_id": "r1:1"})["podId"] == "pod-a"


def test_only_the_owner_renews_its_lease(mock_db):
    claim = claims.claim_attempt(mock_db, "r1", 1, "pod-a", 1)
    assert claims.renew_lease(mock_db, "r1", 1, "pod-a", 90)
    assert not claims.renew_lease(mock_db, "r1", 1, "pod-b", 90)
    renewed = mock_db.claims.find_one({"_id": "r1:1"})["leaseExpiresAt"]
    assert renewed > claim["leaseExpiresAt"]


def test_an_expired_claim_ends_once_and_its_owner_then_fails_to_renew(mock_db):
    claims.claim_attempt(mock_db, "r1", 1, "pod-a", 0.1)
    later = utcnow() + timedelta(seconds=5)
    assert claims.expire(mock_db, "r1", 1, later)
    assert not claims.expire(mock_db, "r1", 1, later)
    assert not claims.renew_lease(mock_db, "r1", 1, "pod-a", 90)


def test_a_live_lease_is_not_expired(mock_db):
    claims.claim_attempt(mock_db, "r1", 1, "pod-a", 90)
    assert not claims.expire(mock_db, "r1", 1, utcnow())
