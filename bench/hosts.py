"""Several hosts on one PostgreSQL store: 1, 2, 4 and 8 daemons, each its own "host".

Each daemon runs in a network namespace of its own, under a host name of its own
(`ip netns exec NS unshare --uts`), and reaches the PostgreSQL server of this
machine over a veth pair the benchmark creates and removes. The server listens
on 127.0.0.1 only and its configuration is not touched: a `socat` forwarder per
host, on this side of the veth pair, passes each connection on to 127.0.0.1:5432
(a process in C per connection, so the forwarding costs little next to the
daemons). Per host count, on one fresh store:

1. *Drain*: N queued runs of a job that appends its execution id and its own
   start time to a file, put in the store at once with the daemons woken;
   total runs/s from the first claim to the last recorded end, each host's
   share, the daemons' and PostgreSQL's CPU over the drain.
2. *Every second*: J jobs `* * * * * *` for W seconds; due → started
   (`started_at - scheduled_for`) p50/p99. With 8 hosts, the leader is
   SIGKILLed midway: failover is the time from the kill to the next enqueue by
   another daemon (lease_ttl 5 s).

Duplicates and losses are counted in every run from both sides: the store's
rows (every run final and succeeded, or abandoned with a succeeded retry; every
slot of every second-job present once) and the child's file (every succeeded
run's id there exactly once). Claim conflicts: PostgreSQL backends of the store seen
waiting on a lock (sampled every 20 ms), and store errors the daemons logged.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.common import (
    NONE,
    POSTGRES_DSN,
    Latency,
    jobd_argv,
    log,
    ms,
    postgres_schema,
    proc_cpu_seconds,
    stop_process,
)
from bench.jobd_side import BASH, _epoch, toml_value
from bench.report import table

LEASE_TTL = 5.0
MAX_CONCURRENT = 16
PORT = 15432  # the forwarder's port on each host's link


@dataclass(frozen=True)
class Size:
    hosts: tuple[int, ...]
    drain: int  # queued runs per host count
    tick_jobs: int
    tick_seconds: int
    failover: bool


FULL = Size(hosts=(1, 2, 4, 8), drain=3000, tick_jobs=20, tick_seconds=12, failover=True)
QUICK = Size(hosts=(1, 2), drain=300, tick_jobs=10, tick_seconds=3, failover=False)


def can_make_hosts() -> str | None:
    """None when hosts can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "unshare", "socat"):
        if shutil.which(tool) is None:
            return f"needs `{tool}`"
    return None


class Host:
    """A network namespace joined to this one by a veth pair, a forwarder to the
    PostgreSQL server on this side of it, and a host name for its daemon."""

    def __init__(self, index: int, tag: str) -> None:
        self.name = f"jobd-host-{index + 1}"
        self.netns = f"jb{tag}{index}"
        self.link, self.peer = f"jb{tag}{index}", f"jb{tag}{index}p"
        self.address, self.inside = f"10.215.{index}.1", f"10.215.{index}.2"
        self.forwarder: subprocess.Popen | None = None

    def ip(self, *args: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", self.netns, "ip"] if inside else ["ip"]
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=10)

    def up(self, target: tuple[str, int]) -> None:
        self.ip("netns", "add", self.netns)
        self.ip("link", "add", self.link, "type", "veth", "peer", "name", self.peer)
        self.ip("link", "set", self.peer, "netns", self.netns)
        self.ip("addr", "add", f"{self.address}/30", "dev", self.link)
        self.ip("link", "set", self.link, "up")
        self.ip("addr", "add", f"{self.inside}/30", "dev", self.peer, inside=True)
        self.ip("link", "set", self.peer, "up", inside=True)
        self.ip("link", "set", "lo", "up", inside=True)
        self.forwarder = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{PORT},bind={self.address},fork,reuseaddr,nodelay",
                f"TCP:{target[0]}:{target[1]},nodelay",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def url(self, url: str) -> str:
        """The store URL as this host reaches it: through its link."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}{self.address}:{PORT}"))

    def command(self, argv: list[str]) -> list[str]:
        return [
            *("ip", "netns", "exec", self.netns),
            *("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name),
            *argv,
        ]

    def down(self) -> None:
        if self.forwarder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.forwarder.pid, signal.SIGTERM)  # socat and its children
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.forwarder.wait(10)
        with contextlib.suppress(subprocess.SubprocessError):
            self.ip("link", "del", self.link)
        with contextlib.suppress(subprocess.SubprocessError):
            self.ip("netns", "del", self.netns)


@dataclass
class Daemon:
    host: Host
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    url: str  # the store as this process reaches it
    workdir: Path
    stamps: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / "jobd.toml"

    def write_config(self) -> None:
        settings = {
            "max_concurrent": MAX_CONCURRENT,
            "lease_ttl": f"{LEASE_TTL:g}s",
            "kill_grace": "1s",
            "shutdown_grace": "2s",
        }
        job = {
            "command": [BASH, "-c", f'echo "$JOBD_EXECUTION_ID $EPOCHREALTIME" >> {self.stamps}'],
            "overlap": "allow",
            "retries": 1,
            "retry_delay": "0s",
        }
        lines = ["[jobd]", *(f"{k} = {toml_value(v)}" for k, v in settings.items())]
        lines += ["", "[jobs.drain]", *(f"{k} = {toml_value(v)}" for k, v in job.items())]
        self.config.write_text("\n".join(lines) + "\n")
        self.job = job

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "NOTIFY_"))}

    def apply(self) -> None:
        subprocess.run(
            [*jobd_argv(), "--config", str(self.config), "--store", self.url, "run", "--once"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, hosts: list[Host]) -> None:
        for host in hosts:
            log_path = self.workdir / f"{host.name}.log"
            argv = [*jobd_argv(), "--config", str(self.config), "--store", host.url(self.url)]
            with log_path.open("w") as out:
                proc = subprocess.Popen(
                    host.command([*argv, "run"]),
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.daemons.append(Daemon(host, proc, log_path))
        deadline = time.monotonic() + 120
        for daemon in self.daemons:
            while "started: instance" not in daemon.log():
                if daemon.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{daemon.host.name} did not start:\n{daemon.log()[-2000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.proc.terminate()
        for daemon in self.daemons:
            stop_process(daemon.proc, timeout=30)


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += proc_cpu_seconds(pid)
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class LockWaits:
    """Counts backends waiting on a lock while they hold locks on the store's tables
    (other work may share the database), sampled every `every` seconds."""

    def __init__(self, url: str, every: float = 0.02) -> None:
        import psycopg2

        self.samples = 0
        self.waits = 0
        self._conn = psycopg2.connect(url)
        self._conn.autocommit = True
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute(
                    "SELECT count(DISTINCT w.pid) FROM pg_locks w WHERE NOT w.granted "
                    "AND w.pid IN (SELECT l.pid FROM pg_locks l JOIN pg_class c "
                    "ON c.oid = l.relation WHERE c.relnamespace = current_schema()::regnamespace)"
                )
                self.waits += int(cur.fetchone()[0])
                self.samples += 1
                self._stop.wait(self._every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.waits


def open_store(url: str) -> Any:
    from jobd.store import open_store as opener

    return opener(url)


def drain(cluster: Cluster, store: Any, n: int) -> dict[str, Any]:
    """N queued runs at once; every daemon woken; until all are final."""
    from bench.throughput import insert_queued

    daemon_pids = [d.proc.pid for d in cluster.daemons]
    cpu_daemons, cpu_pg = cpu_of(daemon_pids), cpu_of(postgres_pids())
    busy0 = machine_busy()
    waits = LockWaits(cluster.url)
    began = time.perf_counter()
    insert_queued(cluster.url, "drain", n)
    store.wake_daemons()
    deadline = time.monotonic() + max(60, n / 20)
    try:
        while time.monotonic() < deadline:
            left = store.db.execute_sql(
                "SELECT count(*) FROM executions WHERE job = 'drain' "
                "AND status IN ('queued', 'running')"
            ).fetchone()[0]
            if not left:
                break
            time.sleep(0.05)
    finally:
        lock_waits = waits.stop()
    wall = time.perf_counter() - began
    busy1 = machine_busy()
    cpu_daemons = cpu_of(daemon_pids) - cpu_daemons
    cpu_pg = cpu_of(postgres_pids()) - cpu_pg
    rows = store.db.execute_sql(
        "SELECT min(started_at), max(finished_at), count(*) FROM executions "
        "WHERE job = 'drain' AND status = 'succeeded'"
    ).fetchone()
    span = (_epoch(rows[1]) or 0) - (_epoch(rows[0]) or 0)
    shares = Counter(
        host
        for (host,) in store.db.execute_sql(
            "SELECT host FROM executions WHERE job = 'drain' AND status = 'succeeded'"
        ).fetchall()
    )
    cores = os.cpu_count() or 1
    machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    return {
        "n": n,
        "done": int(rows[2]),
        "rate": rows[2] / span if span > 0 else 0.0,
        "wall": wall,
        "shares": shares,
        "lock_waits": lock_waits,
        "cpu_daemons": cpu_daemons / wall / cores,  # share of the machine's CPU
        "cpu_pg": cpu_pg / wall / cores,
        "cpu_machine": machine,
    }


def every_second(cluster: Cluster, store: Any, size: Size, failover: bool) -> dict[str, Any]:
    """J every-second jobs for W seconds (the leader killed midway when asked)."""
    from jobd.core.config.parse import parse_job
    from jobd.core.model import Source

    names = [f"tick{i:02d}" for i in range(size.tick_jobs)]
    fields = {**cluster.job, "schedule": "* * * * * *", "catchup": "all"}
    for name in names:
        spec = parse_job(name, fields, "bench", {}, source=Source.CLI)
        store.upsert_cli_job(spec, store.now())
    store.wake_daemons()
    killed_at: float | None = None
    if failover:
        time.sleep(size.tick_seconds / 2)
        killed_at = kill_leader(cluster, store)
        time.sleep(size.tick_seconds / 2 + LEASE_TTL)
    else:
        time.sleep(size.tick_seconds)
    for name in names:
        store.set_paused(name, True, store.now())
    # Until every run is final (an abandoned run's retry included).
    deadline = time.monotonic() + 3 * LEASE_TTL + 30
    while time.monotonic() < deadline:
        left = store.db.execute_sql(
            "SELECT count(*) FROM executions WHERE status IN ('queued', 'running')"
        ).fetchone()[0]
        if not left:
            break
        time.sleep(0.1)
    rows = store.db.execute_sql(
        "SELECT job, scheduled_for, queued_at, started_at, attempt FROM executions "
        "WHERE job <> 'drain' ORDER BY id"
    ).fetchall()
    failover_s = None
    if killed_at is not None:
        after = [_epoch(q) for _j, _d, q, _s, _a in rows if (_epoch(q) or 0) > killed_at]
        failover_s = min(after) - killed_at if after else None  # type: ignore[type-var]
    # Slots that fell due while no daemon led are caught up after the failover,
    # which has its own column: they are left out of due → started.
    gap = (killed_at, killed_at + (failover_s or 0.0)) if killed_at is not None else (0.0, 0.0)
    delays = [
        _epoch(started) - _epoch(due)  # type: ignore[operator]
        for _job, due, _queued, started, attempt in rows
        if attempt == 1
        and due is not None
        and started is not None
        and not gap[0] - 1 <= (_epoch(due) or 0.0) <= gap[1]
    ]
    return {"started": Latency.of(delays), "failover": failover_s, "killed": killed_at}


def kill_leader(cluster: Cluster, store: Any) -> float | None:
    """SIGKILL the daemon holding the lease; the moment it was sent (Unix time)."""
    from jobd.store.admin import leader_lease

    lease = leader_lease(store, store.now())
    pids = {i["id"]: i["pid"] for i in store.instances()}
    pid = pids.get(lease["holder"]) if lease else None
    for daemon in cluster.daemons:
        if daemon.proc.pid == pid and daemon.proc.poll() is None:
            at = time.time()
            daemon.proc.kill()
            daemon.proc.wait()
            log(f"  killed the leader on {daemon.host.name}")
            return at
    log("  no leader to kill was found")
    return None


def audit(store: Any, stamps: Path) -> dict[str, int]:
    """Duplicates and losses, by the store's rows and by the child's file."""
    stamped = Counter(
        int(line.split()[0]) for line in stamps.read_text().splitlines() if line.strip()
    )
    rows = store.db.execute_sql(
        "SELECT id, job, scheduled_for, status, retry_of, attempt FROM executions"
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    retried_ok = {r[4] for r in rows if r[4] is not None and r[3] == "succeeded"}
    duplicates = sum(count - 1 for count in stamped.values() if count > 1)
    lost = 0
    slots: dict[str, set[float]] = {}
    for run_id, job, due, status, _retry_of, attempt in rows:
        if status == "succeeded":
            lost += run_id not in stamped  # recorded as run, never ran
        elif status == "abandoned":
            lost += run_id not in retried_ok and run_id not in stamped
        else:
            lost += 1  # not final, failed, skipped: a run that did not happen
        if due is not None and attempt == 1:
            seen = slots.setdefault(job, set())
            moment = _epoch(due) or 0.0
            duplicates += moment in seen
            seen.add(moment)
    duplicates += sum(1 for run_id in stamped if run_id not in by_id)
    # Every second of each every-second job, from its first slot to its last.
    for seen in slots.values():
        if len(seen) > 1:
            lost += int(max(seen) - min(seen)) + 1 - len(seen)
    return {"duplicates": duplicates, "lost": lost, "runs": len(rows)}


def measure_hosts(count: int, size: Size, target: tuple[str, int]) -> dict[str, Any]:
    log(f"several hosts: {count} daemon(s), each in its own network namespace")
    tag = uuid.uuid4().hex[:4]
    hosts = [Host(i, tag) for i in range(count)]
    workdir = Path(tempfile.mkdtemp(prefix="jobd-bench-hosts-"))
    try:
        with postgres_schema() as url:
            cluster = Cluster(url, workdir, workdir / "stamps")
            cluster.write_config()
            cluster.apply()
            for host in hosts:
                host.up(target)
            store = open_store(url)
            try:
                cluster.start(hosts)
                drained = drain(cluster, store, size.drain)
                ticks = every_second(
                    cluster, store, size, size.failover and count == max(size.hosts)
                )
                cluster.stop()
                checked = audit(store, cluster.stamps)
                errors = sum(
                    d.log().count(" ERROR ") + d.log().count("store unavailable")
                    for d in cluster.daemons
                )
            finally:
                cluster.stop()
                store.close()
    finally:
        for host in hosts:
            host.down()
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"hosts": count, **drained, **ticks, **checked, "errors": errors}
    log(
        f"  {drained['rate']:,.0f} runs/s, due → started p99 {ms(ticks['started'].p(99))} ms, "
        f"{checked['duplicates']} duplicates, {checked['lost']} lost"
    )
    return result


def measure(quick: bool) -> list[dict[str, Any]] | str:
    """Each host count in turn; a sentence instead when hosts cannot be made here."""
    why = can_make_hosts()
    if why:
        log(f"several hosts: skipped, {why}")
        return why
    parts = urlsplit(POSTGRES_DSN)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    size = QUICK if quick else FULL
    return [measure_hosts(count, size, target) for count in size.hosts]


def shares(counter: Counter) -> str:
    total = sum(counter.values()) or 1
    parts = sorted((count / total * 100 for count in counter.values()), reverse=True)
    return " / ".join(f"{p:.0f}" for p in parts)


def section(results: list[dict[str, Any]] | str) -> str:
    heading = "## Several hosts on one PostgreSQL store"
    if isinstance(results, str):
        return f"{heading}\n\nNot measured on this run: {results}."
    rows = []
    for r in results:
        rows.append(
            [
                r["hosts"],
                f"{r['done']:,} / {r['n']:,}",
                f"{r['rate']:,.0f}",
                shares(r["shares"]),
                f"{r['lock_waits']} / {r['errors']}",
                " / ".join(
                    f"{r[key] * 100:.0f}" for key in ("cpu_daemons", "cpu_pg", "cpu_machine")
                ),
                ms(r["started"].p(50)),
                ms(r["started"].p(99)),
                f"{r['failover']:.2f} s" if r["failover"] is not None else NONE,
                r["duplicates"],
                r["lost"],
            ]
        )
    return "\n\n".join(
        [
            heading,
            "Each daemon in a network namespace of its own under its own host name, reaching "
            "this machine's PostgreSQL over a veth pair through a `socat` forwarder (the "
            f"server listens on 127.0.0.1 only, and is left as it is); `max_concurrent = "
            f'{MAX_CONCURRENT}`, `lease_ttl = "{LEASE_TTL:g}s"`. *Drain*: queued runs '
            "put in the store at once, every daemon woken; runs/s from the first claim to "
            "the last recorded end; *share*: each host's part of them, largest first; "
            "*conflicts*: the store's PostgreSQL backends seen waiting on a lock (sampled "
            "every 20 ms) / "
            "store errors in the daemons' logs; *CPU*: the daemons' / PostgreSQL's / the "
            "whole machine's share of all cores during the drain. *Every second*: "
            f"`* * * * * *` jobs, due → started (`started_at - scheduled_for`); with the "
            "most hosts the leader is SIGKILLed midway, *failover* is the kill → the next "
            "enqueue, and the slots due in between (caught up after it) are left out of "
            "due → started. *Duplicates* and *lost* count over every run, from the store's "
            "rows and the child's own file.",
            table(
                [
                    "hosts",
                    "drained",
                    "runs/s",
                    "share %",
                    "conflicts",
                    "CPU % daemons / PostgreSQL / machine",
                    "due → started p50 ms",
                    "p99 ms",
                    "failover",
                    "duplicates",
                    "lost",
                ],
                rows,
            ),
            limit_note(results),
        ]
    )


def limit_note(results: list[dict[str, Any]]) -> str:
    best = max(results, key=lambda r: r["rate"])
    one = results[0]
    return (
        f"Throughput: {one['rate']:,.0f} runs/s with one host, at most {best['rate']:,.0f} "
        f"with {best['hosts']} ({best['rate'] / one['rate']:.2f}{chr(215)} one's). "
        f"During that drain the machine's CPU was {best['cpu_machine'] * 100:.0f} % busy, "
        f"PostgreSQL's share {best['cpu_pg'] * 100:.0f} % and the daemons' "
        f"{best['cpu_daemons'] * 100:.0f} % (the rest: the jobs' processes, the forwarders, "
        "other work): "
        + (
            "the machine's cores, shared by every host, are the limit here, before PostgreSQL."
            if best["cpu_machine"] >= 0.9
            else "the cores were not all busy."
        )
    )


def check(results: list[dict[str, Any]] | str) -> list[tuple[str, bool, str]]:
    if isinstance(results, str):
        return []
    clean = all(r["duplicates"] == 0 and r["lost"] == 0 for r in results)
    checks = [
        (
            "several hosts: 0 duplicates and 0 lost in every run",
            clean,
            ", ".join(f"{r['hosts']}: {r['duplicates']}/{r['lost']}" for r in results),
        )
    ]
    rates = [r["rate"] for r in results]
    grows = all(b >= a * 0.95 for a, b in itertools.pairwise(rates))
    limited = max(results, key=lambda r: r["rate"])["cpu_machine"] >= 0.9
    checks.append(
        (
            "several hosts: runs/s grows with hosts until a shared limit",
            grows or limited,
            " → ".join(f"{r['hosts']}: {r['rate']:,.0f}" for r in results),
        )
    )
    return checks
