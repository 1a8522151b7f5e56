"""`manage-runs token --fill .env`: the step between `cp .env.example .env` and `honcho start`."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from click.testing import CliRunner

from ops.cli import main
from ops.env_file import FILLABLE
from orchestrator.settings import Settings
from tests.servers import ROOT


def _fill(path: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["token", "--fill", str(path), *extra])
    return result.exit_code, result.output if "--json" in extra else " ".join(result.output.split())


def _assignments(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def test_fill_gives_each_empty_credential_of_the_shipped_example_a_fresh_token_the_settings_accept(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env)
    env.chmod(0o644)
    code, output = _fill(env, "--json")
    assert code == 0, output
    filled = json.loads(output)["filled"]
    assert set(filled) == {"INGEST_TOKEN", "OPERATOR_TOKEN", "READER_TOKEN", "SECRET_KEY"}
    values = _assignments(env)
    assert len({values[name] for name in filled}) == 4 and all(len(values[name]) >= 32 for name in filled)
    for value in values.values():
        assert value not in output, "a secret is written to the file, never to the terminal"
    settings = Settings.from_env({**values, "MONGODB_URL": "mongomock://localhost/t"})
    assert settings.secret_key == values["SECRET_KEY"]
    assert stat.S_IMODE(env.stat().st_mode) == 0o600, "a file holding secrets is its owner's alone"
    before = env.read_text()
    assert _fill(env)[1].strip().endswith("no empty credential to fill (a value already set is never replaced)")
    assert env.read_text() == before


def test_fill_never_replaces_a_value_or_uncomments_a_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("OPERATOR_TOKEN=mine-mine-mine-mine-mine-mine-mine-mine\r\n#METRICS_TOKEN=\r\nREADER_TOKEN=  \r\n"
                   "OTHER=\r\n")
    code, output = _fill(env)
    assert code == 0 and "filled READER_TOKEN" in output, output
    lines = env.read_bytes().decode().split("\r\n")
    assert lines[0] == "OPERATOR_TOKEN=mine-mine-mine-mine-mine-mine-mine-mine"
    assert lines[1] == "#METRICS_TOKEN=" and lines[3] == "OTHER="
    assert lines[2].startswith("READER_TOKEN=") and len(lines[2]) > len("READER_TOKEN=") + 30
    assert "METRICS_TOKEN" in FILLABLE


def test_fill_refuses_a_missing_file_and_name_together_with_fill(tmp_path: Path) -> None:
    code, output = _fill(tmp_path / "absent.env")
    assert code == 2 and "absent.env" in output
    env = tmp_path / ".env"
    env.write_text("INGEST_TOKEN=\n")
    code, output = _fill(env, "--name", "alice")
    assert code == 2 and "--fill writes several" in output
    assert env.read_text() == "INGEST_TOKEN=\n"


def test_fill_writes_through_a_symlink_and_says_in_one_line_what_it_cannot_read(tmp_path: Path) -> None:
    target = tmp_path / "real.env"
    target.write_text("OPERATOR_TOKEN=\n")
    link = tmp_path / ".env"
    link.symlink_to(target)
    assert _fill(link)[0] == 0
    assert link.is_symlink() and target.read_text().startswith("OPERATOR_TOKEN=") and len(target.read_text()) > 40
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"READER_TOKEN=\n\xff\xfe\n")
    code, output = _fill(binary)
    assert code == 2 and "binary.env: cannot fill it (UnicodeDecodeError" in output and "Traceback" not in output
