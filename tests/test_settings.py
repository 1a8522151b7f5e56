import pytest

from orchestrator.errors import SettingsError
from orchestrator.settings import Settings


def test_defaults_name_the_database_from_the_url_path():
    settings = Settings.from_env({})
    assert settings.mongodb_url == "mongodb://localhost:27017/ai_scientist"
    assert settings.database == "ai_scientist"
    assert settings.ingest_auth == "required"
    assert settings.pod_id


def test_mongomock_url_selects_the_embedded_database():
    settings = Settings.from_env({"MONGODB_URL": "mongomock://localhost/demo"})
    assert settings.embedded and settings.database == "demo"
    assert settings.broker_url == "mongomock://localhost/demo"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MONGODB_URL": "postgres://x/db"}, "MONGODB_URL"),
        ({"MONGODB_URL": "mongodb://localhost:27017"}, "names no database"),
        ({"INGEST_URL": "localhost:8000"}, "INGEST_URL"),
        ({"MINIO_SECURE": "maybe"}, "MINIO_SECURE"),
        ({"LEASE_S": "ninety"}, "LEASE_S"),
        ({"HEARTBEAT_INTERVAL_S": "-1"}, "HEARTBEAT_INTERVAL_S"),
        ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS"),
        ({"INGEST_AUTH": "off"}, "INGEST_AUTH"),
        ({"LEASE_S": "10", "HEARTBEAT_INTERVAL_S": "15"}, "LEASE_S=10.0 must be longer"),
        ({"MINIO_ENDPOINT": "localhost:9000"}, "MINIO_ACCESS_KEY"),
        ({"BIND_HOST": "every interface"}, "BIND_HOST"),
        ({"WEB_PORT": "70000"}, "WEB_PORT='70000' is above the maximum 65535"),
        # A port urllib cannot read was a traceback in the start-up service check, not a setting error.
        ({"INGEST_URL": "http://127.0.0.1:99999"}, "INGEST_URL='http://127.0.0.1:99999' has a bad port"),
        ({"INGEST_URL": "http://u:pw@h:x1/"}, r"INGEST_URL='http://u:\*\*\*@h:x1/' has a bad port"),
        ({"MINIO_ENDPOINT": "minio:abc"}, "MINIO_ENDPOINT='minio:abc' has a bad port"),
        ({"MINIO_ENDPOINT": "minio:9000/bucket"}, "MINIO_ENDPOINT='minio:9000/bucket' must be host:port"),
        ({"MINIO_ENDPOINT": "ftp://minio:9000"}, "MINIO_ENDPOINT='ftp://minio:9000' must be host:port"),
    ],
)
def test_a_bad_value_fails_at_start_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_the_web_process_listens_on_this_machine_where_ingest_url_points_unless_told():
    settings = Settings.from_env({"WEB_PORT": "8123"})
    assert (settings.bind_address, settings.ingest_url) == ("127.0.0.1:8123", "http://127.0.0.1:8123")
    settings = Settings.from_env({"BIND_HOST": "::", "INGEST_URL": "https://ingest.example.org"})
    assert (settings.bind_address, settings.ingest_url) == ("[::]:8000", "https://ingest.example.org")
    # Unset, INGEST_URL is where the web process listens as seen from this machine.
    for host, url in (("10.1.2.3", "http://10.1.2.3:8000"), ("0.0.0.0", "http://127.0.0.1:8000"),
                      ("::1", "http://[::1]:8000"), ("::", "http://127.0.0.1:8000")):
        assert Settings.from_env({"BIND_HOST": host}).ingest_url == url


def test_broker_url_bounds_server_selection_so_a_down_server_fails_fast():
    settings = Settings.from_env({"MONGODB_URL": "mongodb://h:1/db", "MONGODB_TIMEOUT_S": "2"})
    assert settings.broker_url == "mongodb://h:1/db?serverSelectionTimeoutMS=2000"
    settings = Settings.from_env({"MONGODB_URL": "mongodb://h:1/db?replicaSet=rs"})
    assert settings.broker_url.endswith("?replicaSet=rs&serverSelectionTimeoutMS=5000")


def test_redacted_settings_hide_every_secret():
    settings = Settings.from_env({
        "MONGODB_URL": "mongodb://user:hunter2@h/db", "INGEST_TOKEN": "tok-secret-" + "Qx7Lm2Vb9Rt4Kp8Zs3Nd6Hf1Jc5Wy0",
        "MINIO_ENDPOINT": "m:9000", "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk-secret",
    })
    text = repr(settings.redacted())
    assert "hunter2" not in text and "tok-secret" not in text and "sk-secret" not in text
    assert "mongodb://user:***@h/db" in text


#: A password that must never appear in a message or a log line.
PASSWORD = "hunter2-secret"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mongodb://u:{PASSWORD}@host:99999/db", "Port must be an integer"),
        (f"mongodb://u:{PASSWORD}@[::1/db", "IPv6"),
        (f"mongodb://u:{PASSWORD}@/db", "Empty host"),
        ("mongodb:///db", "Empty host"),
        ("mongomock:///db", "Empty host"),
        (f"mongodb://u:{PASSWORD}@h:abc/db", "Port contains non-digit"),
        (f"mongodb://u:{PASSWORD}@h/db?tlsInsecure=true&tlsAllowInvalidCertificates=true", "cannot be specified"),
        (f"mongodb+srv://u:{PASSWORD}@c.example.com:27017/db", "must not include a port"),
        (f"redis://u:{PASSWORD}@h/db", "must start with mongodb://"),
        (f"mongodb://u:{PASSWORD}@h", "names no database"),
        (f"mongodb://u:{PASSWORD}@h/db.coll", "not a valid database name"),
    ],
)
def test_a_bad_mongodb_url_is_a_settings_error_with_the_password_masked(url, reason):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MONGODB_URL": url})
    message = str(caught.value)
    assert message.startswith("MONGODB_URL=") and reason in message, message
    assert PASSWORD not in message
    assert "***@" in message or "u:" not in url


def test_urls_pymongo_accepts_stay_accepted_without_a_dns_lookup():
    for url, database in [("mongomock://localhost/demo", "demo"), (f"mongomock://u:{PASSWORD}@localhost/d", "d"),
                          ("mongodb://h1:1,h2:2/db?replicaSet=rs&w=majority", "db"),
                          ("mongodb://[::1]:27017/db", "db"), ("mongodb+srv://u:p@cluster.invalid/db?srvMaxHosts=2", "db")]:
        assert Settings.from_env({"MONGODB_URL": url}).database == database


@pytest.mark.parametrize("name", ["MONGODB_TIMEOUT_S", "LEASE_S", "HEARTBEAT_INTERVAL_S", "CANCEL_GRACE_S", "CLOCK_SKEW_S"])
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999"])
def test_a_non_finite_number_is_refused(name, raw):
    with pytest.raises(SettingsError, match=f"{name}='{raw}' is not a finite number; set it to a number such as"):
        Settings.from_env({name: raw})


def test_a_number_below_its_minimum_names_the_minimum_to_use():
    with pytest.raises(SettingsError, match=r"MONGODB_TIMEOUT_S='-1' is below the minimum 0.1; set it to at least 0.1"):
        Settings.from_env({"MONGODB_TIMEOUT_S": "-1"})


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("mongodb://user:secret@host/db", "mongodb://user:***@host/db"),
        ("mongodb://u:se@cret@h1,h2/db", "mongodb://u:***@h1,h2/db"),
        ("mongodb://u:se?cret@h/db", "mongodb://u:***@h/db"),
        ("mongodb://u:pw@h/db?appName=a@b", "mongodb://u:***@h/db?appName=a@b"),
        ("mongodb://u:pw@[::1/db", "mongodb://u:***@[::1/db"),
        ("mongodb://h/db?tlsCertificateKeyFilePassword=secret&w=1", "mongodb://h/db?tlsCertificateKeyFilePassword=***&w=1"),
        ("mongodb://user@h/db", "mongodb://user@h/db"),
    ],
)
def test_redacted_masks_the_password_of_any_url_even_an_unparseable_one(url, masked):
    from orchestrator.redaction import without_password

    assert without_password(url) == masked


def test_redacted_settings_mask_a_password_in_any_url():
    settings = Settings.from_env({"MONGODB_URL": "mongomock://localhost/db", "INGEST_URL": "https://pod:s3cr3t@ingest.example",
                                  "MINIO_ENDPOINT": "u:m1n10pw@minio:9000", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"})
    text = repr(settings.redacted())
    assert "s3cr3t" not in text and "m1n10pw" not in text and "https://pod:***@ingest.example" in text
