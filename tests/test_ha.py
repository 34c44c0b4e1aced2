"""Several daemons, one store: exactly one fires each slot, all of them execute
work, and killing, pausing or disconnecting any of them loses nothing.

Real `jobd run` processes on a real PostgreSQL (and a smaller set on SQLite).
Each PostgreSQL test gets its own login role and schema, so it can terminate
its own daemons' connections without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from jobd.store.admin import leader_lease
from tests.cluster import assert_every_slot_once, can_fake_hosts, cluster, config, slot_rows
from tests.conftest import POSTGRES_DSN, wait_for

pytestmark = pytest.mark.slow

TICK_JOB = """
[jobs.tick]
schedule = "* * * * * *"
shell = "sleep 0.2"
overlap = "allow"
catchup = "all"
"""


@dataclass
class PgTarget:
    url: str
    role: str
    admin: Any

    def terminate(self, application: str = "jobd%") -> int:
        """End every connection this test's daemons hold; returns how many."""
        with self.admin.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = %s AND application_name LIKE %s",
                (self.role, application),
            )
            return int(cur.fetchone()[0])

    def connections(self, application: str) -> int:
        with self.admin.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE usename = %s AND application_name = %s",
                (self.role, application),
            )
            return int(cur.fetchone()[0])


@pytest.fixture
def pg(postgres_admin: Any) -> Iterator[PgTarget]:
    name = f"jobd_ha_{uuid.uuid4().hex[:10]}"
    with postgres_admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}'")
        cur.execute(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
    parts = urlsplit(POSTGRES_DSN)
    host = parts.netloc.rsplit("@", 1)[-1]
    sep = "&" if parts.query else ""
    url = urlunsplit(
        parts._replace(
            netloc=f"{name}:pw-{name}@{host}",
            query=f"{parts.query}{sep}options=-csearch_path%3D{name}",
        )
    )
    target = PgTarget(url, name, postgres_admin)
    yield target
    with postgres_admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        cur.execute(f"DROP SCHEMA {name} CASCADE")
        cur.execute(f"DROP ROLE {name}")


def test_three_daemons_fire_every_slot_once_and_survive_a_killed_leader(
    pg: PgTarget, tmp_path: Path
) -> None:
    jobs = (
        TICK_JOB
        + """
[jobs.long]
shell = 'if [ "$JOBD_ATTEMPT" = 1 ]; then sleep 20; fi'
retries = 1
retry_delay = "100ms"
"""
    )
    with cluster(tmp_path, pg.url, config(pg.url, jobs, lease_ttl="5s")) as group:
        first = group.start()
        assert group.wait_leader() is first
        # The leader is the only daemon yet, so it runs the long job.
        long_id = group.store.enqueue(_manual("long", group.store))
        wait_for(lambda: group.store.execution(long_id).status == "running")
        group.start()
        group.start()
        start = group.store.now()
        time.sleep(6)
        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        old_epoch = leader_lease(group.store, group.store.now())["epoch"]

        def new_fire() -> bool:
            return any((r.epoch or 0) > old_epoch for r in slot_rows(group.store, "tick"))

        wait_for(new_fire, timeout=10, interval=0.02)
        failover = time.monotonic() - killed_at
        print(f"failover {failover:.2f}s")
        assert failover < 6.0, f"the next fire came {failover:.1f}s after the leader died"
        second = group.wait_leader()
        assert second is not first
        abandoned = wait_for(lambda: _abandoned(group.store, long_id), timeout=10)
        assert first_instance(group, first) in abandoned.error
        retry = wait_for(
            lambda: next((r for r in group.store.executions(job="long") if r.retry_of), None)
        )
        assert retry.attempt == 2
        wait_for(lambda: group.store.execution(retry.id).status == "succeeded", timeout=10)
        time.sleep(8)
        end = group.store.now() - timedelta(seconds=2)
        assert_every_slot_once(slot_rows(group.store, "tick"), start, end)


def first_instance(group: Any, proc: Any) -> str:
    return next(i["id"] for i in group.store.instances() if i["pid"] == proc.pid)


def _abandoned(store: Any, run_id: int) -> Any:
    run = store.execution(run_id)
    return run if run.status == "abandoned" else None


def _live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that are still running (zombies do not count)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if entry.name.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _manual(job: str, store: Any) -> Any:
    from jobd.core.model import NewRun, Trigger

    return NewRun(job=job, trigger=Trigger.MANUAL, not_before=store.now(), triggered_by="test")


LONG_JOB = """
[jobs.long]
shell = 'if [ "$JOBD_ATTEMPT" = 1 ]; then sleep 30; fi'
retries = 1
retry_delay = "100ms"
"""


def test_a_paused_leader_resumes_without_writing_a_stale_fire(pg: PgTarget, tmp_path: Path) -> None:
    ttl = 3.0
    with cluster(tmp_path, pg.url, config(pg.url, TICK_JOB + LONG_JOB, lease_ttl="3s")) as group:
        first = group.start()
        assert group.wait_leader() is first
        long_id = group.store.enqueue(_manual("long", group.store))
        long_pid = wait_for(lambda: group.store.execution(long_id).pid)
        start = group.store.now()
        # On another host (when we can fake one), the new leader cannot kill the
        # paused one's job processes: only the paused one can, once it is back.
        group.start(host="jobd-other" if can_fake_hosts() else None)
        wait_for(lambda: len(slot_rows(group.store, "tick")) >= 3)
        first.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        old_epoch = leader_lease(group.store, group.store.now())["epoch"]
        second = group.wait_leader(timeout=10, other_than=first)
        abandoned = wait_for(lambda: _abandoned(group.store, long_id), timeout=10)
        assert first_instance(group, first) in abandoned.error
        time.sleep(max(0.0, stopped + 2 * ttl - time.monotonic()))
        first.signal(signal.SIGCONT)
        # It notices it lost the lease; its keeper stopped its copy of the run while
        # it was paused (jobd.runs.fence), before the store settled it, and it says so.
        wait_for(lambda: "stepping down" in first.text(), timeout=10)
        stopped_copy = f"run {long_id} of long ended (abandoned: stopped by fencing"
        wait_for(lambda: stopped_copy in first.text(), timeout=10)
        assert group.store.execution(long_id).status == "abandoned"
        assert _live_group_members(long_pid) == []
        retry = next(r for r in group.store.executions(job="long") if r.retry_of == long_id)
        wait_for(lambda: group.store.execution(retry.id).status == "succeeded", timeout=10)
        time.sleep(3)
        assert group.leader() is second
        end = group.store.now() - timedelta(seconds=2)
        rows = slot_rows(group.store, "tick")
        assert_every_slot_once(rows, start, end)
        # Fires are fenced: in commit order the epoch never goes back, so nothing
        # with the paused leader's epoch was written after the new epoch began.
        epochs = [r.epoch for r in sorted(rows, key=lambda r: r.id)]
        assert epochs == sorted(epochs), epochs
        assert old_epoch in epochs and max(epochs) > old_epoch


def test_daemons_recover_when_their_connections_are_terminated(
    pg: PgTarget, tmp_path: Path
) -> None:
    with cluster(tmp_path, pg.url, config(pg.url, TICK_JOB, lease_ttl="3s")) as group:
        for _ in range(3):
            group.start()
        group.wait_leader()
        wait_for(lambda: pg.connections("jobd-listen") == 3)
        start = group.store.now()
        for _ in range(3):
            time.sleep(2)
            assert pg.terminate() >= 3
        # Everyone is back: leading, listening, firing every slot.
        wait_for(lambda: pg.connections("jobd-listen") == 3, timeout=15)
        wait_for(lambda: pg.connections("jobd") == 3, timeout=15)
        group.wait_leader()
        time.sleep(4)
        end = group.store.now() - timedelta(seconds=2)
        assert_every_slot_once(slot_rows(group.store, "tick"), start, end)
        assert all(p.alive() for p in group.procs)


# Each run takes a moment, so one daemon (3 at a time) cannot keep up alone and
# the other must take its share, even on a loaded machine.
EXACTLY_ONCE_JOB = """
[jobs.append]
shell = 'echo "$JOBD_EXECUTION_ID" >> "{path}"; sleep 0.2'
overlap = "allow"
"""


def _trigger_concurrently(url: str, job: str, threads: int, each: int) -> list[int]:
    """`threads` writers, each with its own store connection, `each` triggers apiece."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import open_store

    def writer(_: int) -> list[int]:
        store = open_store(url)
        try:
            return [store.enqueue(_manual(job, store)) for _ in range(each)]
        finally:
            store.close()

    with ThreadPoolExecutor(threads) as pool:
        return [run_id for ids in pool.map(writer, range(threads)) for run_id in ids]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_manual_triggers_run_exactly_once_across_daemons(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        request.getfixturevalue("pg").url
        if backend == "postgresql"
        else (f"sqlite:///{tmp_path / 'jobd.db'}")
    )
    out = tmp_path / "ran.txt"
    jobs = EXACTLY_ONCE_JOB.format(path=out)
    with cluster(tmp_path, url, config(url, jobs, max_concurrent=3)) as group:
        group.start()
        group.start()
        ids = _trigger_concurrently(url, "append", threads=10, each=10)
        assert len(set(ids)) == 100

        def all_done() -> bool:
            runs = group.store.executions(job="append", limit=None)
            return len(runs) == 100 and all(r.status == "succeeded" for r in runs)

        wait_for(all_done, timeout=60, interval=0.2)
        lines = out.read_text().split()
        assert sorted(map(int, lines)) == sorted(ids), "a run was executed twice or never"
        ran_on = {r.instance for r in group.store.executions(job="append", limit=None)}
        assert len(ran_on) == 2, "both daemons should share the work"


def test_a_host_with_a_wrong_clock_warns_and_refuses_to_lead(pg: PgTarget, tmp_path: Path) -> None:
    with cluster(tmp_path, pg.url, config(pg.url, TICK_JOB, max_clock_skew="30s")) as group:
        far = group.start(env={"JOBD_TEST_CLOCK_OFFSET": "40"})
        wait_for(lambda: "refusing to lead" in far.text())
        near = group.start(env={"JOBD_TEST_CLOCK_OFFSET": "-5"})
        wait_for(lambda: "differs from the store's by -5" in near.text())
        # The far-off host never took the lease, not even while it was free.
        assert group.wait_leader() is near
        assert leader_lease(group.store, group.store.now())["epoch"] == 1

        def skews() -> dict[str, float] | None:
            found = {i["id"]: i["clock_skew"] for i in group.store.instances()}
            return found if None not in found.values() else None

        recorded = wait_for(skews)
        assert recorded[group.instance_of(far)] == pytest.approx(40, abs=1)
        assert recorded[group.instance_of(near)] == pytest.approx(-5, abs=1)
        wait_for(lambda: len(slot_rows(group.store, "tick")) >= 2)
        assert {r.epoch for r in slot_rows(group.store, "tick")} == {1}


EXCLUSIVE_JOB = """
[jobs.one_at_a_time]
shell = "sleep 0.3"
overlap = "queue"
"""


def test_overlap_queue_is_exclusive_across_daemons_and_a_failover(
    pg: PgTarget, tmp_path: Path
) -> None:
    jobs = EXCLUSIVE_JOB + '\n[jobs.hold]\nshell = "sleep 15"\noverlap = "skip"\n'
    with cluster(tmp_path, pg.url, config(pg.url, jobs, max_concurrent=4)) as group:
        first = group.start()
        group.wait_leader()
        held = group.store.enqueue(_manual("hold", group.store))
        wait_for(lambda: group.store.execution(held).status == "running")
        group.start()
        group.start()
        # Waits for the held run, even though two idle daemons could start it.
        waiting = group.store.enqueue(_manual("hold", group.store))
        first.signal(signal.SIGKILL)
        ids = _trigger_concurrently(group.url, "one_at_a_time", threads=4, each=3)
        wait_for(lambda: _abandoned(group.store, held), timeout=15)

        def settled(job: str, count: int) -> list[Any] | None:
            runs = group.store.executions(job=job, limit=None)
            done = [r for r in runs if r.status not in ("queued", "running")]
            return done if len(done) == count else None

        done = wait_for(lambda: settled("one_at_a_time", len(ids)), timeout=30, interval=0.2)
        assert {r.status for r in done} == {"succeeded"}
        _assert_one_at_a_time(done)
        assert group.store.execution(waiting).status == "running"
        hold_runs = [r for r in group.store.executions(job="hold", limit=None) if r.started_at]
        _assert_one_at_a_time(hold_runs)


def _assert_one_at_a_time(runs: list[Any]) -> None:
    """By the store's clock, each run starts only after the previous one ended."""
    ordered = sorted(runs, key=lambda r: r.started_at)
    for before, after in itertools.pairwise(ordered):
        assert before.finished_at is not None
        assert after.started_at >= before.finished_at, (before, after)


def test_sqlite_table_lease_fires_every_slot_once_through_a_killed_leader(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    with cluster(tmp_path, url, config(url, TICK_JOB, lease_ttl="3s")) as group:
        first = group.start()
        assert group.wait_leader() is first
        group.start()
        start = group.store.now()
        wait_for(lambda: len(slot_rows(group.store, "tick")) >= 3)
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        group.wait_leader(timeout=10, other_than=first)
        assert time.monotonic() - killed < 3 + 1.5
        time.sleep(3)
        end = group.store.now() - timedelta(seconds=2)
        rows = slot_rows(group.store, "tick")
        assert_every_slot_once(rows, start, end)
        epochs = [r.epoch for r in sorted(rows, key=lambda r: r.id)]
        assert epochs == sorted(epochs) and len(set(epochs)) == 2


def test_a_busy_leader_wakes_the_others_to_run_what_it_fires(tmp_path: Path) -> None:
    """SQLite with the file lock: the standby sleeps until woken, and the leader,
    its one slot taken, must wake it when it queues a fire."""
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    jobs = TICK_JOB + '\n[jobs.busy]\nshell = "sleep 8"\n'
    settings = {"leader": "auto", "lease_ttl": "30s", "max_concurrent": 1}
    with cluster(tmp_path, url, config(url, jobs, **settings)) as group:
        leader = group.start()
        busy = group.store.enqueue(_manual("busy", group.store))
        wait_for(lambda: group.store.execution(busy).status == "running")
        assert group.store.execution(busy).instance == group.instance_of(leader)
        helper = group.start()
        helper_id = group.instance_of(helper)
        time.sleep(4)
        late = [
            (r.started_at - r.scheduled_for).total_seconds()
            for r in slot_rows(group.store, "tick")
            if r.instance == helper_id and r.started_at is not None
        ]
        assert len(late) >= 3
        assert max(late) < 2.0, late  # without the wake-up: up to lease_ttl/5 = 6 s


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class ThrowawayServer:
    """A PostgreSQL cluster of our own, on a spare port, that we may stop and start."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("-o", options, "-l", str(self.data.parent / "server.log"), "-w", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "-w", "stop")

    def connections(self, application: str) -> int:
        import psycopg2

        with psycopg2.connect(self.url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
            )
            return int(cur.fetchone()[0])


@pytest.fixture
def throwaway_server() -> Iterator[ThrowawayServer]:
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
        pytest.skip("needs root and PostgreSQL 15's initdb to run a server of its own")
    top = Path(tempfile.mkdtemp(prefix="jobd-pg-"))
    shutil.chown(top, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThrowawayServer(top / "data", port)
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(PG_BIN / "initdb"),
            "-D",
            str(server.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_daemons_ride_out_a_server_restart(
    throwaway_server: ThrowawayServer, tmp_path: Path
) -> None:
    server = throwaway_server
    url = server.url
    with cluster(tmp_path, url, config(url, TICK_JOB, lease_ttl="3s")) as group:
        leader = group.start()
        assert group.wait_leader() is leader
        group.start()
        start = group.store.now()
        wait_for(lambda: len(slot_rows(group.store, "tick")) >= 2)
        group.store.close()
        server.stop()
        # Cut off, the leader stops leading on its own clock; nobody starts runs.
        wait_for(lambda: "stepping down" in leader.text(), timeout=10)
        time.sleep(2)
        server.start()
        for proc in group.procs:
            wait_for(lambda p=proc: "store available again" in p.text(), timeout=20)
        assert leader.text().index("stepping down") < leader.text().index("store available again")
        wait_for(lambda: server.connections("jobd-listen") == 2, timeout=20)
        group.wait_leader()
        time.sleep(3)
        end = group.store.now() - timedelta(seconds=2)
        # catchup = "all": the slots that fell due while the server was down fire too.
        assert_every_slot_once(slot_rows(group.store, "tick"), start, end)
        assert all(p.alive() for p in group.procs)
