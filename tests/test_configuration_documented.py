"""Every variable a process reads is declared, shipped in `.env.example` and in a README table;
and the Procfile, run by honcho, listens where INGEST_URL points whatever PORT honcho hands it.

Declared means: read by `Settings.from_env` (recorded by handing it a mapping that notes each
name asked for), listed in `settings.PROCESS_VARIABLES` (the Procfile's, libraries', the pod
runtime's), or read by the ai_scientist pipeline's config (recorded the same way). The model
providers' keys (`*_API_KEY`, `AWS_*`) are upstream's, chosen by the model names, and named in
the README's pipeline section and `pipeline.ai_scientist.credentials`; they may appear in
`.env.example` without being declared here.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from honcho.environ import expand_processes, parse, parse_procfile

from orchestrator.settings import DEFAULT_BIND_HOST, DEFAULT_WEB_PORT, PROCESS_VARIABLES, Settings
from pipeline.ai_scientist.config import AiScientistConfig
from tests.helpers import WORKER_TOKEN
from tests.servers import ROOT, process_env

PRODUCT = ("orchestrator", "tasks", "ingest_app", "ops", "pipeline", "telemetry")


class Recorder(Mapping[str, str]):
    """An environment that remembers every name asked for."""

    def __init__(self, values: dict[str, str] | None = None):
        self.values = values or {}
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name)
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def read_by_settings() -> set[str]:
    env = Recorder()
    Settings.from_env(env)
    return env.asked


def read_by_the_pipeline() -> set[str]:
    env = Recorder({"AI_SCIENTIST_ROOT": "/opt/AI-Scientist-v2"})
    AiScientistConfig.from_env(env)
    return env.asked


def declared() -> set[str]:
    return read_by_settings() | set(PROCESS_VARIABLES) | read_by_the_pipeline()


def upstream_key(name: str) -> bool:
    return name.endswith("_API_KEY") or name.startswith("AWS_")


def env_example() -> set[str]:
    """Each `NAME=` and `#NAME=` line of `.env.example`."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def readme_tables() -> set[str]:
    """Every `NAME` in the first cell of a README table row."""
    names: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("|"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def procfile_lines() -> dict[str, str]:
    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def procfile_variables() -> dict[str, set[str]]:
    """Each variable the Procfile's lines read from the environment, with the defaults they give
    it (a shell variable a line sets itself, `dir="..."`, is not one)."""
    found: dict[str, set[str]] = {}
    for line in procfile_lines().values():
        own = set(re.findall(r"(?:^|[\s;&])([A-Za-z_][A-Za-z0-9_]*)=", line))
        for name, default in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", line):
            if name not in own:
                found.setdefault(name, set()).add(default)
        for name in re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", line):
            if name not in own:
                found.setdefault(name, set())
    return found


def read_in_the_source() -> set[str]:
    """Names read with a literal anywhere in the product: os.environ.get("X"), environ["X"], getenv("X")."""
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    names: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            names.update(pattern.findall(path.read_text()))
    names.update(pattern.findall((ROOT / "celeryconfig.py").read_text()))
    return names


def test_the_recorder_sees_what_settings_read():
    assert {"MONGODB_URL", "INGEST_TOKEN", "SWEEP_INTERVAL_S", "DISPATCHER_METRICS_PORT", "BIND_HOST", "WEB_PORT"} <= read_by_settings()
    assert {"AI_SCIENTIST_ROOT", "AI_SCIENTIST_POLL_S", "AI_SCIENTIST_MODEL_REVIEW"} <= read_by_the_pipeline()


def test_every_declared_variable_is_in_env_example():
    missing = sorted(declared() - env_example())
    assert not missing, f"add to .env.example (commented is fine): {missing}"


def test_every_declared_variable_is_in_a_readme_table():
    missing = sorted(declared() - readme_tables())
    assert not missing, f"add a row to the README's configuration table: {missing}"


def test_env_example_and_the_readme_name_no_variable_nothing_reads():
    known = declared()
    stale = sorted(name for name in env_example() | readme_tables() if name not in known and not upstream_key(name))
    assert not stale, f"documented but read by no process (or not declared in settings.PROCESS_VARIABLES): {stale}"


def test_every_variable_the_source_or_the_procfile_reads_is_declared():
    undeclared = sorted((read_in_the_source() | set(procfile_variables())) - declared())
    assert not undeclared, f"declare in settings.PROCESS_VARIABLES (or read through Settings): {undeclared}"


def test_the_procfile_defaults_are_the_declared_ones():
    variables = procfile_variables()
    assert variables["BIND_HOST"] == {DEFAULT_BIND_HOST}
    for name, defaults in variables.items():
        if name in PROCESS_VARIABLES:
            assert len(defaults) == 1, f"{name} has several defaults in the Procfile: {defaults}"
            assert f"({defaults.pop()})" in PROCESS_VARIABLES[name], name


def test_no_process_reads_port_and_only_web_writes_metrics_files():
    lines = procfile_lines()
    assert not any(re.search(r"\$\{?PORT\b", line) for line in lines.values()), lines
    assert "PROMETHEUS_MULTIPROC_DIR=" in lines["web"]
    for name in set(lines) - {"web"}:
        assert "env -u PROMETHEUS_MULTIPROC_DIR" in lines[name], name


def test_env_example_sends_workers_where_the_web_process_listens():
    shipped = parse((ROOT / ".env.example").read_text())
    settings = Settings.from_env(shipped)
    assert settings.ingest_url == f"http://127.0.0.1:{settings.web_port}" and settings.web_port == DEFAULT_WEB_PORT
    assert settings.bind_host == "127.0.0.1" and settings.minio_endpoint is None


def _web_bind(env: dict[str, str], tmp_path: Path) -> str:
    """The address gunicorn resolves when the Procfile's web line runs with `env`."""
    command = procfile_lines()["web"] + " --print-config"
    done = subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    [bind] = [line for line in done.stdout.splitlines() if line.startswith("bind ")]
    return bind.split("=", 1)[1].strip()


def test_honchos_port_cannot_move_the_web_process_away_from_ingest_url(tmp_path):
    """honcho gives the first process PORT=5000 (the next 5100...) unless .env sets PORT; gunicorn
    alone would bind 0.0.0.0:$PORT. The web line must bind where INGEST_URL points all the same,
    whatever the order the processes are named in."""
    shipped = parse((ROOT / ".env.example").read_text())
    shipped.update(INGEST_TOKEN=WORKER_TOKEN, MONGODB_URL="mongomock://localhost/honcho_port")
    processes = procfile_lines()
    for order in (["web", "worker"], ["worker", "dispatcher", "web"]):
        expanded = {p.name: p.env for p in expand_processes({n: processes[n] for n in order}, env=shipped, port=5000)}
        web_env = expanded["web.1"]
        assert web_env["PORT"] in ("5000", "5200")
        environ = process_env(**web_env)
        environ.pop("INGEST_URL", None)
        assert _web_bind(environ, tmp_path) == f"['127.0.0.1:{DEFAULT_WEB_PORT}']"
        assert Settings.from_env(web_env).ingest_url == f"http://127.0.0.1:{DEFAULT_WEB_PORT}"
