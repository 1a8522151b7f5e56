"""Idle load: the commands per second an idle pod and an idle dispatcher send the server, what
100 idle pods cost it, and what `BROKER_POLLING_INTERVAL_S` buys in dispatch latency for that.

Why it matters: kombu's MongoDB transport polls (one find-and-delete per empty poll), so every
pod costs the server commands whether or not it has work, and 100 pods multiply it. The
interval is a trade: a shorter one takes a queued task sooner.

How: a `devtools.proxy.WireProxy` sits in front of the server and counts, by command and
collection, what one process sends through it; nothing else talks through it. One idle
dispatcher (every setting at its default) is counted first, then one idle worker (started as
item 2 starts it, every setting at its default but the interval) at each interval in turn. Each
process gets a warm-up after it says it is ready (its start-up commands: indexes, queue
declarations) before its window is counted.

What 100 idle pods cost the server cannot be read from one pod: at the longer intervals its
idling moves the server's CPU by a few clock ticks over a window, and a lone pod's commands each
wake an otherwise idle server, which 100 pods' commands do not (that reading is shown beside, per
command too). So the pod's commands are replayed as 100 pods would send them: each (command,
collection) the pod sent, shaped as
its sender shapes it (kombu's find-and-delete on the empty `gpu` queue and its lookup of the
`celeryev` bindings, our presence upsert, one record per pod, pymongo's `hello`), at the pod's
measured rate, from 100 schedules with random phases, by a pool of threads of the bench. The
server's CPU over the replay (FerretDB's and every PostgreSQL process's, from /proc), less its
background measured before anything started, is the figure. The replay shares a few
connections where 100 pods would hold a few hundred.

Latency: with the same worker, runs are dispatched one at a time as item 2 dispatches them (its
code), by a dispatcher talking to the server directly. Before each run the dispatcher is paused
(SIGSTOP) for one to two of its intervals: a sweep every 1 s and a poll every `interval` are
two free-running timers that keep one phase for minutes, so without the pause every run of a
measurement would wait the same fraction of the poll (seen: p50 0.29 s at 1 s, below the 0.41 s
at 0.5 s). The pause makes each run's send land at a random point of the pod's poll cycle, as
in a deployment where the phase is whatever the processes' start gave.
"""

from __future__ import annotations

import heapq
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pymongo.database import Database

from bench.dispatch import dispatch_one, shipped, start_dispatcher, start_worker
from bench.harness import Harness, warm_up
from bench.idle_report import PODS, Fleet, Interval, Window, report
from bench.procs import BenchError, Child, server_cpu_s, tree_cpu_s, wait_until
from bench.report import Document
from devtools.proxy import WireProxy
from orchestrator import pods as presence

NAME = "idle"
#: The intervals the issue asks about (seconds).
INTERVALS_S = (0.1, 0.5, 1.0)
#: After a process says it is ready, before its commands are counted: its start-up (indexes,
#: queue declarations, the first presence beat and sweep) is not idle load.
WARM_UP_S = 10.0
#: The server's own background (PostgreSQL's writers, FerretDB's housekeeping), measured with
#: nothing of ours talking to it but an idle ingest app.
BACKGROUND_S = 10.0
#: Threads sending the replayed fleet's commands: enough that a slow command does not hold up
#: the schedule (a pod's commands never wait for another pod's).
REPLAY_THREADS = 8

#: (command, collection) -> one such command as an idle pod's sender shapes it, for pod number n
#: (kombu's `Channel._get` and `get_table`, `orchestrator.pods.beat`, pymongo's monitor).
PROBES: dict[tuple[str, str], Callable[[Database, int], object]] = {
    ("findAndModify", "messages"): lambda db, n: db.messages.find_one_and_delete({"queue": "gpu"},
                                                                                 sort=[("priority", 1)]),
    ("find", "messages.routing"): lambda db, n: list(db["messages.routing"].find({"exchange": "celeryev"})),
    ("update", "pods"): lambda db, n: presence.beat(db, f"bench-fleet-{n}", f"fleet:{n}", run_id=None, attempt=None,
                                                    gpu=None, queues=("gpu",)),
    ("hello", ""): lambda db, n: db.client.admin.command("hello"),
}


def proxied_url(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's on loopback (credentials, database
    and options kept), so a process talks to the same server through the proxy."""
    parts = urlsplit(url)
    if parts.scheme != "mongodb" or "," in parts.netloc:
        raise BenchError(f"the idle bench proxies one mongodb:// host, not {parts.scheme}://{parts.hostname}")
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(f"{credentials}@" if credentials else "") + f"127.0.0.1:{port}"))


def schedule(window: Window, pods: int, seconds: float, rng: random.Random) -> list[tuple[float, int, tuple[str, str]]]:
    """(second, pod, command) for `pods` pods that each send what `window` counted at its rate,
    every pod and command at a random phase, over `seconds`; in time order. Commands with no
    probe are left out (`Fleet.skipped` names them)."""
    plan = []
    for key, count in window.commands.items():
        if key not in PROBES or count == 0:
            continue
        period = window.seconds / count
        for pod in range(pods):
            at = rng.uniform(0, period)
            while at < seconds:
                plan.append((at, pod, key))
                at += period
    heapq.heapify(plan)
    return [heapq.heappop(plan) for _ in range(len(plan))]


def run(h: Harness, doc: Document) -> None:
    window_s = 10.0 if h.quick else 30.0
    replay_s = 10.0 if h.quick else 20.0
    count = 6 if h.quick else 20
    db = h.database(NAME)
    proxy = WireProxy(*_host_port(h))
    try:
        ingest = h.start_ingest(db.name)
        warm_up(ingest)
        print(f"  [idle] server background, {BACKGROUND_S:g} s ...", flush=True)
        background = _background_cpu_per_s(h, BACKGROUND_S)

        print(f"  [idle] one idle dispatcher, {window_s:g} s window ...", flush=True)
        env = h.env(db.name, INGEST_URL=ingest.url)
        env["MONGODB_URL"] = proxied_url(h.server.url(db.name), proxy.port)
        dispatcher = start_dispatcher(h, env)
        _ready(dispatcher, "dispatcher started")
        dispatcher_window = _count(h, proxy, dispatcher, window_s, background)
        h.stop(dispatcher)

        intervals = []
        for interval in INTERVALS_S:
            print(f"  [idle] one idle pod at BROKER_POLLING_INTERVAL_S={interval:g}: {window_s:g} s window, "
                  f"{count} runs, then {PODS} pods replayed for {replay_s:g} s ...", flush=True)
            measured = _interval(h, db, proxy, ingest.url, interval, window_s, count, background)
            measured.fleet = replay(h, db, measured.idle, replay_s, background)
            intervals.append(measured)
        h.stop(ingest.child)
    finally:
        proxy.close()
    report(doc, dispatcher_window, intervals, shipped().broker_polling_interval_s, window_s,
           __doc__.split("\n\n", 1)[1])


def _host_port(h: Harness) -> tuple[int, str]:
    """The server's port and host, for the proxy to forward to."""
    if h.ferretdb:
        return h.server.port, "127.0.0.1"
    parts = urlsplit(h.server.url("admin"))
    if parts.port is None or parts.hostname is None or "," in parts.netloc:
        raise BenchError("the idle bench needs MONGODB_TEST_URL to name one host and port")
    return parts.port, parts.hostname


def _interval(h: Harness, db: Any, proxy: WireProxy, ingest_url: str, interval: float, window_s: float,
              count: int, background: float | None) -> Interval:
    """One idle worker at `interval`: its window through the proxy, then `count` runs dispatched to it."""
    pod = f"bench-idle-{interval:g}".replace(".", "-")
    env = h.env(db.name, INGEST_URL=ingest_url, POD_ID=pod, BROKER_POLLING_INTERVAL_S=str(interval))
    env["MONGODB_URL"] = proxied_url(h.server.url(db.name), proxy.port)
    worker = start_worker(h, env, pod)
    _ready(worker, " ready.")
    measured = Interval(interval, _count(h, proxy, worker, window_s, background))
    # The dispatcher talks to the server directly: only the pod's commands go through the proxy.
    dispatcher = start_dispatcher(h, h.env(db.name, INGEST_URL=ingest_url))
    dispatch_one(db, worker, dispatcher, timeout=90)  # the worker's first child, imports and indexes
    rng = random.Random(2)  # the same pauses at every interval
    sweep_s = shipped().dispatch_interval_s
    for _ in range(count):
        _new_phase(dispatcher, rng.uniform(sweep_s, 2 * sweep_s))
        time.sleep(rng.uniform(0.3, 1.3))
        measured.samples.append(dispatch_one(db, worker, dispatcher))
    h.stop(dispatcher)
    h.stop(worker)
    return measured


def _new_phase(dispatcher: Child, pause_s: float) -> None:
    """Pause the dispatcher for longer than its sleep, so its next sweep starts when it resumes: at
    a moment of ours, unrelated to the pod's poll cycle (see the module's docstring)."""
    dispatcher.kill(signal.SIGSTOP)
    try:
        time.sleep(pause_s)
    finally:
        dispatcher.kill(signal.SIGCONT)


def _ready(child: Child, line: str) -> None:
    """Wait for the process to log that it is ready, then its warm-up."""
    wait_until(lambda: line in child.output() or not child.alive(), 60, f"{child.name} to log {line.strip()!r}")
    if not child.alive():
        raise BenchError(f"{child.name} exited at start:\n{child.output(3000)}")
    time.sleep(WARM_UP_S)


def _background_cpu_per_s(h: Harness, seconds: float) -> float | None:
    before = server_cpu_s(h.server)
    time.sleep(seconds)
    after = server_cpu_s(h.server)
    return None if before is None or after is None else (after - before) / seconds


def _count(h: Harness, proxy: WireProxy, child: Child, seconds: float, background: float | None) -> Window:
    """Count what `child` sends through the proxy for `seconds`, and the CPU it costs."""
    commands, server, process = proxy.counts_by_collection(), server_cpu_s(h.server), tree_cpu_s(child.pid)
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    commands = proxy.counts_by_collection() - commands
    server_after, process_after = server_cpu_s(h.server), tree_cpu_s(child.pid)
    if not child.alive():
        raise BenchError(f"{child.name} exited while idle:\n{child.output(3000)}")
    cost = None
    if server is not None and server_after is not None and background is not None:
        cost = server_after - server - background * elapsed
    return Window(elapsed, commands, cost, process_after - process)


def replay(h: Harness, db: Database, pod: Window, seconds: float, background: float | None,
           pods: int = PODS) -> Fleet:
    """Send what `pods` pods like `pod` would for `seconds` (see the module's docstring) and read
    the server's CPU over it. The clock runs until the last command returns: a server that
    cannot keep up shows as fewer commands per second than aimed at."""
    plan = schedule(pod, pods, seconds, random.Random(3))
    due: queue.Queue[tuple[int, tuple[str, str]] | None] = queue.Queue()
    sent = [0] * REPLAY_THREADS
    failures: list[BaseException] = []

    def send(slot: int) -> None:
        while (item := due.get()) is not None:
            try:
                PROBES[item[1]](db, item[0])
            except Exception as exc:  # noqa: BLE001 - reported after the replay, not lost in a thread
                failures.append(exc)
            sent[slot] += 1

    for n in range(pods):  # every pod's presence record exists, as in a deployment
        PROBES[("update", "pods")](db, n)
    threads = [threading.Thread(target=send, args=(slot,), name=f"fleet-{slot}", daemon=True)
               for slot in range(REPLAY_THREADS)]
    for thread in threads:
        thread.start()
    before, began = server_cpu_s(h.server), time.monotonic()
    for at, n, key in plan:
        wait = began + at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        due.put((n, key))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    elapsed, after = time.monotonic() - began, server_cpu_s(h.server)
    if failures:
        raise BenchError(f"the replay of {pods} pods failed {len(failures)} times, first: {failures[0]!r}")
    cost = None if before is None or after is None or background is None else after - before - background * elapsed
    skipped = tuple(key for key in pod.commands if key not in PROBES)
    aimed = sum(count for key, count in pod.commands.items() if key in PROBES) / pod.seconds * pods
    return Fleet(pods, elapsed, aimed, sum(sent), cost, skipped)
