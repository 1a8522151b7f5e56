"""`python -m bench [--quick] [--only NAME ...] [--history N ...] [--output PATH]`: run the benchmarks of
issue 7 against the real-server lane's server and write BENCHMARKS.md.

`--history N` (repeatable) runs the growth benchmark once per N past runs; without `--only` it runs
growth alone, and growth runs only when asked (`--history` or `--only growth`): it takes minutes per N.

Every process and database the run starts is released in a `finally`, on SIGTERM and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import console, dispatch, emitter, flood, growth, idle, ingest, memory, tracing, visibility
from bench.harness import Harness
from bench.procs import ROOT, BenchError, MongoServer
from bench.report import Document, ferretdb_version, machine

#: name -> the benchmark's run(harness, document), in the order they run.
BENCHMARKS: dict[str, Callable[[Harness, Document], None]] = {
    ingest.NAME: ingest.run,
    dispatch.NAME: dispatch.run,
    visibility.NAME: visibility.run,
    emitter.NAME: emitter.run,
    flood.NAME: flood.run,
    growth.NAME: growth.run,
    memory.NAME: memory.run,
    console.NAME: console.run,
    idle.NAME: idle.run,
    tracing.NAME: tracing.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows and fewer samples (about 3 minutes)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--history", action="append", type=_count, metavar="N",
                        help="pre-fill N finished runs and run the growth benchmark once per N (repeatable: "
                        "--history 0 --history 1000); without --only, only growth runs")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="where to write the report")
    args = parser.parse_args(argv)
    if args.history and args.only and growth.NAME not in args.only:
        parser.error(f"--history is for the growth benchmark: add --only {growth.NAME}")
    return args


def _count(text: str) -> int:
    """A number of past runs: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} past runs: give 0 or more")
    return value


def selection(args: argparse.Namespace) -> list[str]:
    """The benchmarks to run: `--only`'s; growth alone for `--history`; else every one but growth,
    which takes minutes per N and runs only when asked."""
    if args.only:
        return list(args.only)
    if args.history:
        return [growth.NAME]
    return [name for name in BENCHMARKS if name != growth.NAME]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = selection(args)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    server = MongoServer(os.environ.get("MONGODB_TEST_URL") or None)
    harness: Harness | None = None
    try:
        server.start()
        harness = Harness(server, quick=args.quick, history=tuple(sorted(set(args.history or ()))))
        _log_to(harness.tmp / "bench.log")
        command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" --only {n}" for n in args.only or [])
        command += "".join(f" --history {n}" for n in args.history or [])
        document = Document(command=command, machine=machine(_server_name(harness)))
        print(f"bench: {', '.join(selected)} on {document.machine.server}" + (" (quick)" if args.quick else ""), flush=True)
        load_before = os.getloadavg()
        document.sections.append(("How it ran", _setup(harness)))
        for name in selected:
            began = time.monotonic()
            BENCHMARKS[name](harness, document)
            print(f"  {name} done in {time.monotonic() - began:.0f} s", flush=True)
        document.seconds = time.monotonic() - started
        document.sections[0] = ("How it ran", document.sections[0][1] + "\n" + _load_note(load_before, os.getloadavg()))
        args.output.write_text(document.render())
        print(f"bench: wrote {args.output} ({document.seconds:.0f} s)")
        return 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        try:
            if harness is not None:
                harness.close()
        finally:
            server.close()


def _server_name(h: Harness) -> str:
    db = h.database("probe")
    info = db.client.admin.command("buildInfo")
    if h.server.external_url is None or "ferretdbVersion" in info:
        version = ferretdb_version(ROOT / "devtools" / "ferretdb" / "go.mod") or info.get("ferretdbVersion", "?")
        backend = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(h.server.backend, h.server.backend)
        return (f"FerretDB {version}, {backend} backend (devtools/ferretdb/bin/ferretdb-test; reports MongoDB "
                f"{info.get('version', '?')} wire compatibility), loopback TCP")
    return f"MongoDB {info.get('version', '?')} at MONGODB_TEST_URL"


def _setup(h: Harness) -> str:
    from orchestrator import ingest as ingest_core

    per_command = ingest_core.FERRETDB_UPDATES_PER_COMMAND
    lines = [
        "- Server: " + ("our FerretDB binary started for this run on a loopback port, data in a fresh temporary "
                        "directory" if h.ferretdb else "the MongoDB server at MONGODB_TEST_URL") +
        "; every benchmark works in fresh databases, dropped at the end.",
        "- Our processes run as the Procfile runs them, with every setting at its default except paths and the "
        "token: `gunicorn 'ingest_app:create_app()'` (sync workers, `--timeout 300` so a slow batch is reported "
        "rather than killed), `celery -A tasks worker -Q gpu --concurrency 1 --prefetch-multiplier 1 -E` with the "
        "shipped `celeryconfig`, and `ops.dispatcher.main`. Clients are threads of the bench process, bodies "
        "encoded before any clock starts.",
        f"- gunicorn workers: **{h.ingest_workers}**.",
    ]
    if h.ferretdb:
        lines.append(
            f"  Ingest sends at most `FERRETDB_UPDATES_PER_COMMAND` = {per_command} updates per command on FerretDB: "
            "FerretDB v1.24 keeps every update of one `update` command holding a pooled backend connection until the "
            "command returns (`defer closer.Close()` inside the loop over the updates, "
            "`internal/handler/msg_update.go`), and update commands that together hold the whole pool (50 "
            "connections for the server on PostgreSQL, 100 per database on SQLite) deadlock it for good (seen: one "
            "command of 50 updates on PostgreSQL).")
    return "\n".join(lines)


def _load_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return (f"- Load average (1 min) at the start {before[0]:.2f}, at the end {after[0]:.2f}: the machine is shared, "
            "and anything else running on its two cores is in these figures.")


def _log_to(path: Path) -> None:
    """Library and app logs go to a file in the scratch directory: the console shows progress."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
