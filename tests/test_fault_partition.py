"""Fault: the daemon running a job loses its store (the connection is cut, or
freezes) or is paused (SIGSTOP), while another daemon is there to take over.

Never two copies at once: the job writes a timestamp every 0.1 s, and the last
one of the first copy must come before the first one of its retry. On
PostgreSQL the other daemon retries the run once its owner's heartbeat is
lease_ttl old, so the owner must have stopped it first (jobd.runs.fence). On SQLite
a paused daemon still holds its liveness lock: its run is not taken from it.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.core.model import NewRun, Status, Trigger
from jobd.runs.fence import Fence, fence_times
from jobd.store import Store
from tests.cluster import can_fake_hosts
from tests.conftest import open_store, wait_for
from tests.daemons import Daemons, proxy_to, runs, wait_run
from tests.faults import lines_of, stuck_rows
from tests.reliability import Recorder
from tests.test_fault_clock import LIBFAKETIME, needs_faketime

pytestmark = [pytest.mark.slow, pytest.mark.fault]

TTL = 3.0
OTHER_HOST = "jobd-host-a" if can_fake_hosts() else None


def trigger(store: Store, job: str) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


def stamping_job(stamps: Path, first: int = 120, retry: int = 10) -> dict[str, object]:
    """A job whose first attempt writes `first` timestamps, a retry `retry`."""
    script = (
        f'n={first}; [ "$JOBD_ATTEMPT" -gt 1 ] && n={retry}; i=0; '
        'while [ "$i" -lt "$n" ]; do '
        f'echo "$JOBD_ATTEMPT $(date +%s.%N)" >> {stamps}; sleep 0.1; i=$((i + 1)); done'
    )
    return {"shell": script, "retries": 1, "retry_delay": "0s"}


def copies(stamps: Path) -> dict[int, tuple[float, float]]:
    """(first, last) timestamp written by each attempt."""
    seen: dict[int, list[float]] = defaultdict(list)
    for line in stamps.read_text().splitlines() if stamps.exists() else []:
        attempt, at = line.split()
        seen[int(attempt)].append(float(at))
    return {attempt: (min(ats), max(ats)) for attempt, ats in seen.items()}


def overlap(spans: dict[int, tuple[float, float]]) -> float:
    """Seconds during which the first attempt and its retry both ran (0 when apart)."""
    if 1 not in spans or 2 not in spans:
        return 0.0
    return max(0.0, spans[1][1] - spans[2][0])


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    group = Daemons(tmp_path, token=f"partition-{time.monotonic_ns()}")
    try:
        yield group
    finally:
        group.cleanup()


def described(pids: list[int]) -> list[str]:
    """What each leftover process is, for an assertion's message."""
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(bytes(1), b" ").decode(errors="replace")
            found.append(f"{pid}: {command[:120]}")
        except OSError:
            found.append(f"{pid}: gone")
    return found


def _settle(store: object, run_id: int) -> None:
    """Wait for the first attempt and its retry to end."""
    wait_run(store, run_id, lambda r: r.status.final, timeout=30)  # type: ignore[arg-type]

    def retried() -> bool:
        retries = [r for r in runs(store, "work") if r.retry_of == run_id]  # type: ignore[arg-type]
        return bool(retries) and all(r.status.final for r in retries)

    wait_for(retried, timeout=40, interval=0.1)


@pytest.mark.parametrize("fault", ["cut", "freeze", "sigstop"])
def test_a_cut_off_or_paused_daemon_stops_its_run_before_the_retry_starts(
    postgres_url: str, tmp_path: Path, daemons: Daemons, reliability: Recorder, fault: str
) -> None:
    cut_off_or_paused(postgres_url, tmp_path, daemons, reliability, fault)


# Host A's clocks, its monotonic clock included, 10 % slow against the store's: 200
# times what NTP lets a clock's rate drift, half of what the fence's margin takes.
SLOW_RATE = 0.9


@needs_faketime
@pytest.mark.parametrize("fault", ["cut", "sigstop"])
def test_a_daemon_whose_clock_runs_slow_still_stops_its_run_before_the_retry_starts(
    postgres_url: str, tmp_path: Path, daemons: Daemons, reliability: Recorder, fault: str
) -> None:
    """The fence counts on A's monotonic clock, the store calls A's run lost by its
    own: a clock that runs slow eats into the margin between the two (README,
    Self-fencing). A's daemon and its keeper run under libfaketime at SLOW_RATE;
    the job's stamps stay on real time, to be compared with B's."""
    assert LIBFAKETIME is not None, "libfaketime is required in CI"
    slow = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"+0 x{SLOW_RATE:g}"}
    cut_off_or_paused(
        postgres_url,
        tmp_path,
        daemons,
        reliability,
        fault,
        a_env=slow,
        job_env={"FAKETIME": "+0"},
        what=f"whose clocks run {1 - SLOW_RATE:.0%} slow (libfaketime x{SLOW_RATE:g}) ",
    )


def cut_off_or_paused(
    postgres_url: str,
    tmp_path: Path,
    daemons: Daemons,
    reliability: Recorder,
    fault: str,
    a_env: dict[str, str] | None = None,
    job_env: dict[str, str] | None = None,
    what: str = "",
) -> None:
    """Host A runs the job, reaching the store through a proxy; B is there to take
    over. A is cut off (`cut`: connections closed; `freeze`: open, silent) or
    paused (`sigstop`) mid-run: its copy must end before B's retry starts."""
    stamps = tmp_path / "stamps"
    store = open_store(postgres_url)  # the test's own view, around the proxy
    job = stamping_job(stamps)
    if job_env:
        job["env"] = job_env
    daemons.write_config({"work": job}, lease_ttl=f"{TTL:g}s", kill_grace="1s")
    with proxy_to(postgres_url) as proxy:
        # On another host when we can fake one: no leftover-killer of B's can reach
        # A's job then (and on the same host it must not: A is alive).
        a = daemons.start(proxy.url_for(postgres_url), "a", host=OTHER_HOST, env=a_env)
        run_id = trigger(store, "work")
        run = wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
        assert run.instance == a.instance_id
        b = daemons.start(postgres_url, "b")
        wait_for(lambda: len(lines_of(stamps)) >= 10, timeout=10)
        if fault == "cut":
            proxy.cut()
        elif fault == "freeze":
            proxy.freeze()
        else:
            a.signal(signal.SIGSTOP)
        try:
            lost = wait_run(store, run_id, lambda r: r.status.final, timeout=20)
            wait_for(lambda: 2 in copies(stamps), timeout=20, interval=0.05)
            time.sleep(0.5)  # the first copy, if it still ran, would stamp on meanwhile
        finally:
            if fault == "cut":
                proxy.restore()
            elif fault == "freeze":
                proxy.thaw()
            else:
                a.signal(signal.SIGCONT)
        _settle(store, run_id)
        spans = copies(stamps)
        overlapped = overlap(spans)
        attempts = runs(store, "work")
        left = daemons.leftovers()
        reliability.observe(
            "partition",
            "postgresql",
            runs=len(attempts),
            duplicates=int(overlapped > 0),
            lost=0 if any(r.status is Status.SUCCEEDED for r in attempts) else 1,
            orphans=len(left),
            stuck=stuck_rows(store),
            detail=f"host A {what}{fault} mid-run, B retries after lease_ttl {TTL:g}s: "
            f"copies overlapped {overlapped:.2f}s",
        )
        assert overlapped == 0, f"both copies ran for {overlapped:.2f}s: {spans}\n{a.log()}"
        assert lost.status is Status.ABANDONED, (lost.status, lost.error)
        assert [r.status for r in attempts if r.retry_of == run_id] == [Status.SUCCEEDED]
        assert b.running and not left, described(left)
        # A comes back knowing it was fenced, and says so.
        wait_for(lambda: "no heartbeat reached the store" in a.log(), timeout=20)
        store.close()


def test_a_paused_sqlite_daemon_keeps_its_run(
    sqlite_url: str, tmp_path: Path, daemons: Daemons, reliability: Recorder
) -> None:
    """Liveness by lock: a paused daemon is not taken for gone, nothing is retried."""
    stamps = tmp_path / "stamps"
    store = open_store(sqlite_url)
    daemons.write_config(
        {"work": stamping_job(stamps, first=60)}, lease_ttl=f"{TTL:g}s", kill_grace="1s"
    )
    a = daemons.start(sqlite_url, "a")
    run_id = trigger(store, "work")
    wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
    b = daemons.start(sqlite_url, "b")
    wait_for(lambda: len(lines_of(stamps)) >= 5, timeout=10)
    a.signal(signal.SIGSTOP)
    try:
        time.sleep(2 * TTL)  # what is measured: nothing happens for two lease_ttls
        assert store.execution(run_id).status is Status.RUNNING  # type: ignore[union-attr]
    finally:
        a.signal(signal.SIGCONT)
    done = wait_run(store, run_id, lambda r: r.status.final, timeout=30)
    attempts = runs(store, "work")
    left = daemons.leftovers()
    reliability.observe(
        "partition",
        "sqlite",
        runs=len(attempts),
        duplicates=len(attempts) - 1,
        lost=0 if done.status is Status.SUCCEEDED else 1,
        orphans=len(left),
        stuck=stuck_rows(store),
        detail=f"host A SIGSTOPped mid-run for {2 * TTL:g}s: its lock keeps the run its own",
    )
    assert done.status is Status.SUCCEEDED and len(attempts) == 1
    assert b.running and not left
    with contextlib.suppress(Exception):
        store.close()


# -- a second host in a network namespace, partitioned at its link ------------------------


class NetnsHost:
    """A second host: a network namespace joined to this one by a veth pair, and a
    host name of its own. `partition()` drops its link (packets vanish: the
    network stalls, as a switch failure would), `heal()` brings it back."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.netns, self.link, self.peer = f"jobd-{tag}", f"jv{tag}", f"jv{tag}p"
        subnet = random.randrange(1, 250)
        self.address, self.inside = f"10.213.{subnet}.1", f"10.213.{subnet}.2"

    def ip(self, *args: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", self.netns, "ip"] if inside else ["ip"]
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=10)

    def up(self) -> None:
        self.ip("netns", "add", self.netns)
        self.ip("link", "add", self.link, "type", "veth", "peer", "name", self.peer)
        self.ip("link", "set", self.peer, "netns", self.netns)
        self.ip("addr", "add", f"{self.address}/30", "dev", self.link)
        self.ip("link", "set", self.link, "up")
        self.ip("addr", "add", f"{self.inside}/30", "dev", self.peer, inside=True)
        self.ip("link", "set", self.peer, "up", inside=True)
        self.ip("link", "set", "lo", "up", inside=True)

    def partition(self) -> None:
        self.ip("link", "set", self.link, "down")

    def heal(self) -> None:
        self.ip("link", "set", self.link, "up")

    def down(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.ip("link", "del", self.link)
        with contextlib.suppress(subprocess.SubprocessError):
            self.ip("netns", "del", self.netns)


def can_make_hosts() -> bool:
    if not can_fake_hosts() or shutil.which("ip") is None:
        return False
    host = NetnsHost()
    try:
        host.up()
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        host.down()
    return True


@pytest.mark.skipif(not can_make_hosts(), reason="needs root, ip netns and unshare")
def test_a_host_whose_network_fails_stops_its_run_before_the_retry_starts(
    postgres_url: str, tmp_path: Path, daemons: Daemons, reliability: Recorder
) -> None:
    """Host A lives in a network namespace and reaches the store through its link;
    the link goes down mid-run (nothing is closed: the network just stops)."""
    stamps = tmp_path / "stamps"
    store = open_store(postgres_url)
    daemons.write_config({"work": stamping_job(stamps)}, lease_ttl=f"{TTL:g}s", kill_grace="1s")
    host = NetnsHost()
    host.up()
    try:
        with proxy_to(postgres_url, bind=host.address) as proxy:
            a = daemons.start(
                proxy.url_for(postgres_url), "a", host="jobd-netns-a", netns=host.netns
            )
            run_id = trigger(store, "work")
            wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
            assert store.execution(run_id).host == "jobd-netns-a"  # type: ignore[union-attr]
            b = daemons.start(postgres_url, "b")
            wait_for(lambda: len(lines_of(stamps)) >= 10, timeout=10)
            host.partition()
            try:
                lost = wait_run(store, run_id, lambda r: r.status.final, timeout=20)
                wait_for(lambda: 2 in copies(stamps), timeout=20, interval=0.05)
                time.sleep(0.5)
            finally:
                host.heal()
            _settle(store, run_id)
            spans = copies(stamps)
            overlapped = overlap(spans)
            attempts = runs(store, "work")
            left = daemons.leftovers()
            reliability.observe(
                "partition",
                "postgresql",
                runs=len(attempts),
                duplicates=int(overlapped > 0),
                lost=0 if any(r.status is Status.SUCCEEDED for r in attempts) else 1,
                orphans=len(left),
                stuck=stuck_rows(store),
                detail="host A in a network namespace loses its link mid-run: copies "
                f"overlapped {overlapped:.2f}s",
            )
            assert overlapped == 0, f"both copies ran for {overlapped:.2f}s: {spans}\n{a.log()}"
            assert lost.status is Status.ABANDONED, (lost.status, lost.error)
            assert [r.status for r in attempts if r.retry_of == run_id] == [Status.SUCCEEDED]
            assert b.running and not left
    finally:
        host.down()
        store.close()


# -- the margin, on paper: pure arithmetic of jobd.runs.fence ----------------------------------


@pytest.mark.parametrize(
    ("ttl", "kill_grace"), [(3.0, 1.0), (30.0, 5.0), (30.0, 60.0), (600.0, 5.0)]
)
@pytest.mark.parametrize("slow", [0.0, 0.0005, 0.05, 0.15])
def test_the_fence_kills_before_the_store_may_call_the_run_lost(
    ttl: float, kill_grace: float, slow: float
) -> None:
    """`slow`: how much our monotonic clock runs slow against the store's (NTP keeps
    it under 0.0005). The store dates our heartbeat no earlier than we sent it, and
    calls our runs lost lease_ttl after that, by its own clock."""
    term_at, kill_at = fence_times(0.0, ttl, kill_grace)
    assert 0 < term_at <= kill_at
    store_seconds_at_kill = kill_at * (1 + slow)
    assert store_seconds_at_kill < ttl
    # What is left for a late SIGKILL on a loaded host: at least a tenth of lease_ttl.
    assert ttl - store_seconds_at_kill >= (ttl / 40 if slow > 0.05 else ttl / 10)
    # Heartbeats go every lease_ttl / 6 while runs go on: a fence needs 4 in a row lost.
    assert term_at >= 4 * ttl / 6


def test_a_run_the_fence_stopped_is_named_so_after_a_renewal() -> None:
    """A paused daemon resumes: its heartbeat thread may renew before the loop reaps
    the run the keeper stopped. That run is still recorded as stopped by fencing, and
    a run started after the renewal is not."""
    fence = Fence(ttl=1.5, kill_grace=1.0, armed=True)
    before = time.monotonic()
    wait_for(fence.fired, timeout=10)
    fence.renewed(time.monotonic())
    after = time.monotonic()
    assert not fence.fired()
    reason = fence.reason(before)
    assert reason is not None and reason.startswith("stopped by fencing: no heartbeat")
    assert fence.reason(after) is None
    assert fence.reason() is None


def test_the_leftover_killer_spares_an_instance_that_is_only_silent(store: Store) -> None:
    """Heartbeats.gone: a same-host instance whose process lives keeps its runs (it fences
    them itself); one whose process is gone does not."""
    import os
    import socket
    import subprocess
    from types import SimpleNamespace

    from jobd.daemon.heartbeats import Heartbeats

    host = socket.gethostname()
    ended = subprocess.Popen(["true"])
    ended.wait()
    me = SimpleNamespace(store=store)
    assert Heartbeats.gone(me, f"{host}-{os.getpid()}-abc123") is False  # type: ignore[arg-type]
    assert Heartbeats.gone(me, f"{host}-{ended.pid}-abc123") is True  # type: ignore[arg-type]
