"""A throwaway PostgreSQL cluster for FerretDB's PostgreSQL backend: `initdb` into a fresh
directory, `pg_ctl` on a free loopback port, one database for FerretDB.

PostgreSQL refuses to run as root, and CI runs as root: there every PostgreSQL program runs as
the `postgres` user (`runuser`), and the directory is handed to that user.

The server can be stopped the ways a fault test needs: `stop()` (a clean shutdown) and
`crash()` (`pg_ctl stop -m immediate`: every backend quits at once, no checkpoint, and the next
start replays the WAL, as after a power cut or an OOM kill).

The cluster gets the GIN indexes of `orchestrator.index_plan` as a deployment would (`FERRETDB_PG_INDEXES=0`
for FerretDB's tables as it leaves them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devtools.procs import ServerUnavailable, free_port

USER = "ferretdb"
DATABASE = "ferretdb"
# Tests throw the cluster away, so surviving a machine crash buys nothing there (no fsync); the
# bench keeps PostgreSQL's defaults to measure what production would see. Commits stay
# synchronous: the fault tests kill PostgreSQL, and with `synchronous_commit=off` a write it had
# acknowledged vanished with the process (seen: a run's status history lost its last entries),
# which no production server does.
FAST_OPTIONS = "-c fsync=off -c full_page_writes=off"
INSTALL_HINT = ("install Debian's postgresql package (`bash devtools/setup.sh` does), or set FERRETDB_BACKEND=sqlite "
                "to run the tests on FerretDB's SQLite backend")


def bin_dir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: Debian keeps them in /usr/lib/postgresql/<major>/bin
    (newest major first); elsewhere `pg_config --bindir` or the PATH tells."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        candidates.append(Path(found))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return next((c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()), None)


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


class PostgresServer:
    """One cluster in a temporary directory of its own (a directory of the caller's would be
    unreachable for `postgres` when it is private to root), removed by `close`."""

    def __init__(self, prefix: str = "postgresql-", durable: bool = False, gin_indexes: bool = True):
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.datadir = self.root / "pgdata"
        self.log_path = self.root / "postgresql.log"
        self.durable = durable
        self.bin = bin_dir()
        self._initialised = False
        #: Install `orchestrator.index_plan.postgresql_sql` when the cluster is made, as the README
        #: tells an operator to (False: FerretDB's tables as it leaves them, for contrast).
        self.gin_indexes = gin_indexes

    def url(self) -> str:
        """The URL FerretDB's `-postgresql-url` takes (trust authentication on loopback)."""
        return f"postgres://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        """Create the cluster on the first call; raises `ServerUnavailable` when PostgreSQL is
        not installed or does not start."""
        if self.bin is None:
            raise ServerUnavailable(f"PostgreSQL is not installed: {INSTALL_HINT}")
        if not self._initialised:
            self._init()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " " + FAST_OPTIONS
        self._pg("pg_ctl", "-D", str(self.datadir), "-l", str(self.log_path), "-w", "-t", "60", "-o", options, "start")
        if not self._initialised:
            self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)
            self._initialised = True
            if self.gin_indexes:
                from orchestrator.index_plan import postgresql_sql

                self.sql(postgresql_sql())

    def sql(self, script: str) -> str:
        """Run `script` with psql as the cluster's superuser in FerretDB's database; its output."""
        assert self.bin is not None
        argv = self._as_owner([str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(self.port), "-U", USER, "-d", DATABASE, "-f", "-"])
        done = subprocess.run(argv, input=script, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            raise ServerUnavailable(f"PostgreSQL: psql failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        return done.stdout

    def stop(self) -> None:
        """A clean shutdown (`-m fast`: open sessions are ended, then a checkpoint)."""
        self._pg_ctl_stop("fast")

    def crash(self) -> None:
        """Every PostgreSQL process quits at once, without a checkpoint: the next start
        recovers from the WAL, as after a crash."""
        self._pg_ctl_stop("immediate")

    def running(self) -> bool:
        if self.bin is None or not self.datadir.exists():
            return False
        done = subprocess.run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "status"]),
                              capture_output=True, text=True, check=False)
        return done.returncode == 0

    def close(self) -> None:
        if self.running():
            self.crash()  # the data is thrown away next: no checkpoint to wait for
        shutil.rmtree(self.root, ignore_errors=True)

    def _init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
            self.root.chmod(0o700)
        self._pg("initdb", "-D", str(self.datadir), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync",
                 "--locale=C")

    def _pg_ctl_stop(self, mode: str) -> None:
        if self.running():
            self._pg("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def _pg(self, program: str, *args: str) -> None:
        assert self.bin is not None
        argv = self._as_owner([str(self.bin / program), *args])
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise ServerUnavailable(f"PostgreSQL: `{program} {' '.join(args)}` failed ({done.returncode}): "
                                    f"{(done.stderr or done.stdout).strip()[-1500:]}\n{log}")

    @staticmethod
    def _as_owner(argv: list[str]) -> list[str]:
        """As root, run as `postgres` (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return argv
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServerUnavailable("running as root needs `runuser` (util-linux) to start PostgreSQL as `postgres`")
        return [runuser, "-u", "postgres", "--", *argv]
