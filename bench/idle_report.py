"""What the idle benchmark (`bench.idle`) measured, and its section of BENCHMARKS.md.

Pure: no clocks, no I/O, no server (the smoke test runs it on made-up figures), so the text and
the arithmetic behind the choice of `BROKER_POLLING_INTERVAL_S` are tested apart from the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.dispatch import Sample, shipped
from bench.report import Document, Row, Target, number
from bench.stats import Summary

#: The deployment the default is chosen for.
PODS = 100
#: Item 2's target for the dispatch latency p95 (insert -> `ai.run.started` applied), seconds.
DISPATCH_P95_TARGET_S = 1.5
#: The broker poll: the command the interval governs.
POLL = ("findAndModify", "messages")

#: (command, collection) -> what sends it. Read from the code of kombu, Celery, pymongo and ours;
#: a pair not named here is shown as "other" in the breakdown, with its name.
SOURCES: dict[tuple[str, str], str] = {
    POLL: "broker poll: kombu's find-and-delete on the `gpu` queue",
    ("find", "messages.routing"): "Celery's worker-heartbeat, every 2 s: kombu looks up the `celeryev` "
                                  "exchange's bindings to publish it",
    ("insert", "messages"): "a Celery event delivered to a bound `celeryev` queue (a running Flower or `celery events`)",
    ("update", "pods"): "presence beat, every `PRESENCE_INTERVAL_S`",
    ("hello", ""): "pymongo's server monitoring, every 10 s per client",
    ("ismaster", ""): "pymongo's connection handshake",
    ("find", "runs"): "dispatch sweep (QUEUED runs, every `DISPATCH_INTERVAL`) and the sweeper's queries, "
                      "one per status it looks at (every `SWEEP_INTERVAL_S`)",
    ("find", "meta"): "sweeper: the dedup prune's marker and the age of the terminal counts",
    ("listIndexes", "events_seen"): "sweeper: whether the server expires dedup records itself (a TTL index)",
    ("find", "pods"): "sweeper: pod presence",
    ("distinct", "messages"): "sweeper: orphaned `celeryev` queues",
}


@dataclass(frozen=True)
class Window:
    """What one process sent through the proxy over a window, and the CPU it cost."""

    seconds: float
    commands: Counter[tuple[str, str]]
    #: The server's CPU seconds over the window less its background; None when unreadable.
    server_cpu_s: float | None
    #: The counted process's own CPU seconds (its pool children included).
    process_cpu_s: float

    @property
    def rate(self) -> float:
        """Commands per second."""
        return sum(self.commands.values()) / self.seconds

    def rates(self) -> list[tuple[tuple[str, str], float]]:
        """(command, collection) -> commands per second, most frequent first."""
        return [(key, count / self.seconds) for key, count in
                sorted(self.commands.items(), key=lambda item: (-item[1], item[0]))]

    def rate_of(self, key: tuple[str, str]) -> float:
        return self.commands.get(key, 0) / self.seconds

    @property
    def server_ms_per_s(self) -> float | None:
        """Milliseconds of server CPU per second of this process's idling, as read directly: a few
        clock ticks over a window, so a check of the fleet's figure rather than a figure."""
        return None if self.server_cpu_s is None else max(0.0, self.server_cpu_s) * 1000 / self.seconds


@dataclass(frozen=True)
class Fleet:
    """The server under `pods` idle pods' command streams, replayed at one pod's measured rates."""

    pods: int
    seconds: float
    #: Commands per second the replay aimed at (the pods' measured rates, summed).
    target_rate: float
    sent: int
    #: The server's CPU seconds over the replay less its background; None when unreadable.
    server_cpu_s: float | None
    #: Commands of the pod's the replay could not make (no probe for them), by (command, collection).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def cores(self) -> float | None:
        """Server CPU cores the fleet keeps busy."""
        return None if self.server_cpu_s is None else max(0.0, self.server_cpu_s) / self.seconds

    @property
    def ms_per_pod(self) -> float | None:
        """Milliseconds of server CPU per second, per pod."""
        cores = self.cores
        return None if cores is None else cores * 1000 / self.pods


@dataclass
class Interval:
    """One polling interval: the idle worker's window, its fleet replayed, the runs dispatched."""

    interval_s: float
    idle: Window
    fleet: Fleet | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def to_claimed(self) -> Summary:
        """Insert -> the worker's claim: the run started on the pod."""
        return Summary.of([(s.claimed - s.created).total_seconds() for s in self.samples])

    @property
    def broker_wait(self) -> Summary:
        """SCHEDULED -> claimed: the part the polling interval governs (plus the pool child's take-up)."""
        return Summary.of([(s.claimed - s.scheduled).total_seconds() for s in self.samples])

    @property
    def to_started(self) -> Summary:
        """Insert -> `ai.run.started` applied and seen: item 2's measure."""
        return Summary.of([s.latency for s in self.samples])

    @property
    def cores(self) -> float | None:
        return None if self.fleet is None else self.fleet.cores


def expected_wait_s(interval_s: float, idle_pods: int) -> float:
    """Mean wait for the first poll after a send when `idle_pods` pods poll the queue, each at its
    own phase: the earliest of k uniform points of [0, interval) lies interval / (k + 1) in."""
    return interval_s / (idle_pods + 1)


def breakdown(window: Window) -> str:
    """One entry per (command, collection): rate and what sends it, most frequent first."""
    return "; ".join(f"`{command}`{f' {collection}' if collection else ''} {number(rate)}/s "
                     f"({SOURCES.get((command, collection), 'other')})"
                     for (command, collection), rate in window.rates())


def _ms(summary: Summary) -> str:
    return f"{summary.p50 * 1000:.0f} / {summary.p95 * 1000:.0f} ms"


def _cores(item: Interval) -> str:
    return "—" if item.cores is None else number(item.cores)


def tradeoff_table(intervals: Sequence[Interval], default_s: float, pods: int = PODS) -> str:
    """Interval -> idle commands/s per pod -> the fleet's -> server CPU -> dispatch latency."""
    lines = [
        f"| `BROKER_POLLING_INTERVAL_S` | idle pod, commands/s (of which broker polls) | {pods} idle pods, "
        f"commands/s | {pods} idle pods, server CPU (cores; replayed) | SCHEDULED -> claimed p50 / p95 | "
        "insert -> claimed p50 / p95 | insert -> `ai.run.started` applied p50 / p95 (n) |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in intervals:
        idle = item.idle
        latency = ["—"] * 3 if not item.samples else [
            _ms(item.broker_wait), _ms(item.to_claimed), f"{_ms(item.to_started)} ({len(item.samples)})"]
        mark = " (default)" if item.interval_s == default_s else ""
        lines.append(f"| {item.interval_s:g} s{mark} | {number(idle.rate)} ({number(idle.rate_of(POLL))}) | "
                     f"{number(idle.rate * pods)} | {_cores(item)} | " + " | ".join(latency) + " |")
    return "\n".join(lines)


def comparisons(intervals: Sequence[Interval], default_s: float, pods: int = PODS) -> list[str]:
    """What the default gains and gives up against each other interval measured, for `pods` pods:
    commands/s, server cores, and dispatch latency (p50 / p95)."""
    chosen = next((item for item in intervals if item.interval_s == default_s), None)
    if chosen is None:
        return []
    lines = []
    for other in intervals:
        if other is chosen:
            continue
        fewer = (other.idle.rate - chosen.idle.rate) * pods
        text = (f"- {default_s:g} s against {other.interval_s:g} s: {pods} idle pods send "
                f"{number(abs(fewer))} commands/s {'fewer' if fewer >= 0 else 'more'} "
                f"({abs(fewer) / (other.idle.rate * pods):.0%})")
        if chosen.cores is not None and other.cores is not None:
            text += (f" and keep {number(abs(other.cores - chosen.cores))} server cores "
                     f"{'less' if other.cores >= chosen.cores else 'more'} busy")
        if chosen.samples and other.samples:
            def delta(mine: Summary, theirs: Summary) -> str:
                return f"{(mine.p50 - theirs.p50) * 1000:+.0f} / {(mine.p95 - theirs.p95) * 1000:+.0f} ms"

            text += (f"; a run waits {delta(chosen.broker_wait, other.broker_wait)} (p50 / p95) for its pod's poll, "
                     f"{delta(chosen.to_started, other.to_started)} from insert to `ai.run.started` applied")
        lines.append(text + ".")
    return lines


def report(doc: Document, dispatcher: Window, intervals: list[Interval], default_s: float, window_s: float,
           how: str) -> None:
    """The rows of the results table and the "Idle load" section; `how` is the method's text."""
    chosen = next((item for item in intervals if item.interval_s == default_s), None)
    fastest = intervals[0]
    sweep_s = shipped().dispatch_interval_s
    if chosen is not None:
        note = f"{window_s:g} s window; {PODS} idle pods: {number(chosen.idle.rate * PODS)} commands/s"
        doc.rows.append(Row("idle", f"idle pod, commands/s at BROKER_POLLING_INTERVAL_S={default_s:g} (the default)",
                            chosen.idle.rate, "commands/s", fastest.idle.rate,
                            f"at {fastest.interval_s:g} s", note=note))
        if chosen.cores is not None and fastest.cores is not None:
            doc.rows.append(Row("idle", f"server CPU under {PODS} idle pods at {default_s:g} s (FerretDB + PostgreSQL, "
                                "their commands replayed)", chosen.cores, "cores", fastest.cores,
                                f"at {fastest.interval_s:g} s"))
        if chosen.samples and fastest.samples:
            doc.rows.append(Row("idle", f"dispatch latency p95 at {default_s:g} s (insert -> ai.run.started "
                                "applied, item 2's measure)", chosen.to_started.p95, "s", fastest.to_started.p95,
                                f"at {fastest.interval_s:g} s", Target("<", DISPATCH_P95_TARGET_S),
                                note=f"n={chosen.to_started.n} per interval; one idle pod, dispatcher sweep every "
                                     f"{sweep_s:g} s"))
    doc.rows.append(Row("idle", f"idle dispatcher, commands/s (defaults: sweep every {sweep_s:g} s, sweeper every "
                        f"{shipped().sweep_interval_s:g} s)", dispatcher.rate, "commands/s",
                        note=f"{window_s:g} s window"))
    doc.sections.append(("Idle load", notes(dispatcher, intervals, default_s, window_s, how)))


def notes(dispatcher: Window, intervals: list[Interval], default_s: float, window_s: float, how: str) -> str:
    """The section's text: the trade-off table, what the load is made of, and the choice."""
    lines = [how.strip(), "", tradeoff_table(intervals, default_s), ""]
    lines.append(f"Commands counted over a {window_s:g} s window per process; '{PODS} idle pods, commands/s' "
                 "multiplies one pod's. Latency is from the run documents' timestamps (milliseconds, one clock), "
                 "one idle pod taking every run.")
    lines += ["", "What the load is made of (commands/s by command and collection):", ""]
    for item in intervals:
        idle, fleet = item.idle, item.fleet
        text = (f"- Idle pod at {item.interval_s:g} s: {number(idle.rate)}/s = {breakdown(idle)}. "
                f"Pod CPU {number(idle.process_cpu_s * 1000 / idle.seconds)} ms/s")
        if fleet is not None and fleet.ms_per_pod is not None and fleet.sent:
            text += (f"; server CPU per pod {number(fleet.ms_per_pod)} ms/s in the replay of {fleet.pods} "
                     f"({number(fleet.rate)} of {number(fleet.target_rate)} commands/s sent, "
                     f"{number(fleet.ms_per_pod / fleet.rate * fleet.pods)} ms per command)")
            text += "" if not fleet.skipped else f", not replayed: {', '.join(' '.join(k).strip() for k in fleet.skipped)}"
        if idle.server_ms_per_s is not None and idle.rate:
            text += (f"; one pod alone, read directly over its window: {number(idle.server_ms_per_s)} ms/s "
                     f"({number(idle.server_ms_per_s / idle.rate)} ms per command)")
        lines.append(text + ".")
    lines.append(f"- Idle dispatcher: {number(dispatcher.rate)}/s = {breakdown(dispatcher)}. Process CPU "
                 f"{number(dispatcher.process_cpu_s * 1000 / dispatcher.seconds)} ms/s"
                 + ("" if dispatcher.server_ms_per_s is None else
                    f"; server CPU read directly over the window {number(dispatcher.server_ms_per_s)} ms/s") + ".")
    lines += ["", dominates(intervals), "",
              f"**The default for {PODS} pods: `BROKER_POLLING_INTERVAL_S` = {default_s:g} s.**", ""]
    lines += comparisons(intervals, default_s)
    lines += ["", why(intervals, default_s)]
    return "\n".join(lines).rstrip() + "\n"


def dominates(intervals: Sequence[Interval]) -> str:
    """Which source dominates an idle pod's load, at each interval."""
    shares = ", ".join(f"{item.idle.rate_of(POLL) / item.idle.rate:.0%} at {item.interval_s:g} s" for item in intervals)
    rest = [item.idle.rate - item.idle.rate_of(POLL) for item in intervals]
    heartbeat = max(item.idle.rate_of(("find", "messages.routing")) for item in intervals)
    beats = max(item.idle.rate_of(("update", "pods")) for item in intervals)
    return (f"What dominates: broker polls, {shares} of an idle pod's commands. The rest, at most "
            f"{number(max(rest))}/s whatever the interval, is Celery's worker-heartbeat ({number(heartbeat)}/s: before "
            "each one, every 2 s, kombu looks up the `celeryev` exchange's bindings; with Flower or `celery events` "
            "running it is also inserted into their queue, not measured here), pymongo's monitoring (`hello`), and "
            f"the presence beat ({number(beats)}/s, `PRESENCE_INTERVAL_S` = 10 s: the least of them). The heartbeat "
            "is sent with or without `-E` / `worker_send_task_events` (Celery's Events bootstep starts the event "
            "dispatcher for heartbeats unless `--without-heartbeat`); task events are sent only while a task runs, "
            "so they cost an idle pod nothing. `--without-heartbeat` would save the lookup but take Flower's "
            "online/offline view of the workers with it, and the `pods` presence records already say which pods are "
            "alive (`manage-runs stats`). A busy pod sends no polls at all: with prefetch 1 and late acks kombu's "
            "channel does not poll while its one task is unacknowledged (`Channel.drain_events` checks "
            "`qos.can_consume()`; read from kombu, not measured here), so these figures are the price of idle "
            "capacity.")


def why(intervals: Sequence[Interval], default_s: float) -> str:
    """Why the shipped default, from the figures: the saving against the shortest interval, what a
    longer one would add, and the latency it costs. Empty when the default is the shortest."""
    chosen = next((item for item in intervals if item.interval_s == default_s), None)
    fastest = intervals[0]
    longer = [item for item in intervals if item.interval_s > default_s]
    if chosen is None or chosen is fastest:
        return ""
    saved = (fastest.idle.rate - chosen.idle.rate) * PODS
    text = (f"Why {default_s:g} s: against {fastest.interval_s:g} s it takes {number(saved)} commands/s "
            f"({saved / (fastest.idle.rate * PODS):.0%}) off the server for {PODS} idle pods")
    if chosen.cores is not None and fastest.cores is not None:
        text += f", and {number(fastest.cores - chosen.cores)} of its cores on this machine"
        alone, fastest_alone = chosen.idle.server_ms_per_s, fastest.idle.server_ms_per_s
        if alone is not None and fastest_alone is not None:
            text += (f" ({number((fastest_alone - alone) * PODS / 1000)} if one pod's own reading were multiplied by "
                     f"{PODS}: a lone pod pays the server's wake-ups)")
    if longer:
        further = (chosen.idle.rate - longer[-1].idle.rate) * PODS
        fixed = chosen.idle.rate - chosen.idle.rate_of(POLL)
        text += (f"; {longer[-1].interval_s:g} s would take only {number(further)} commands/s more "
                 f"({further / saved:.0%} of that again), since {number(fixed)}/s of a pod's load are not polls")
    text += (". What it costs is the wait for a pod's next poll, and only when a run finds pods idle: with one "
             "idle pod (measured) a run waits up to the interval; with k idle pods the first of their polls takes "
             f"it, {default_s:g} / (k + 1) s on average (k = 10: {expected_wait_s(default_s, 10) * 1000:.0f} ms); "
             f"and the dispatcher's own sweep, every {shipped().dispatch_interval_s:g} s where the server has no change "
             "streams, comes before it.")
    if chosen.samples:
        verdict = "holds" if chosen.to_started.p95 < DISPATCH_P95_TARGET_S else "is missed"
        text += (f" Item 2's target, p95 < {DISPATCH_P95_TARGET_S:g} s from insert to `ai.run.started` applied, "
                 f"{verdict} at {default_s:g} s with one idle pod ({chosen.to_started.p95:.2f} s here)")
        if longer and longer[-1].samples:
            text += f"; at {longer[-1].interval_s:g} s the p95 is {longer[-1].to_started.p95:.2f} s"
        text += "."
    return text
