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
    ],
)
def test_a_bad_value_fails_at_start_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


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
