"""Fault: a job's descendants leave its process group (`setsid`) and clear its
environment (`env -i`), then the run ends by itself, times out, is cancelled, or
its daemon is stopped or SIGKILLed. No descendant may outlive its run.

The escaped processes are found by the pid files they write, since `env -i`
takes the test's marker variable away from them too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.conftest import open_store, wait_for
from tests.faults import Daemon, lines_of, q, stuck_rows, write_config
from tests.processes import alive
from tests.reliability import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.fault]

KILL_GRACE = 2.0  # as in the report that found the escapes


def escape_script(pids: Path, main: Path, then: str) -> str:
    """A shell job that starts two escapers and then does `then`.

    One escaper keeps the run's output open (so the run waits for it), the other
    clears its environment and writes nowhere; each records its own pid, in
    PIDS.setsid and PIDS.env-i, and both in PIDS."""
    keeper = "/bin/sh -c 'echo $$ >> {0}; echo $$ >> {1}; exec sleep 301'"
    plain = keeper.format(pids, f"{pids}.setsid")
    cleared = keeper.format(pids, f"{pids}.env-i")
    return (
        f"echo $$ >> {main}; "
        f"setsid {plain} & "
        f"env -i /usr/bin/setsid {cleared} >/dev/null 2>&1 </dev/null & "
        f'while [ "$(wc -l < {pids})" -lt 2 ]; do sleep 0.05; done; '
        f"{then}"
    )


@functools.cache
def containment_mode() -> str:
    """What jobd would use on this machine (decided in a child: it is process-wide)."""
    code = "from jobd.runs.containment import containment as c; c.setup('probe'); print(c.mode)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def survivors(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive once `timeout` has passed (returns early when none is)."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not any(alive(p) for p in pids), timeout=timeout, interval=0.05)
    return [p for p in pids if alive(p)]


CASES = {
    # how the run ends: (what the job does after escaping, job settings, expected status)
    "exit": ("exit 0", "", Status.SUCCEEDED),
    "timeout": ("sleep 300", 'timeout = "1s"\n', Status.TIMED_OUT),
    "cancel": ("sleep 300", "", Status.CANCELLED),
    "stop": ("sleep 300", "", Status.CANCELLED),
    "kill": ("sleep 300", "", None),
}


@pytest.mark.parametrize("mode", ["cgroup", "subreaper"])
@pytest.mark.parametrize("how", list(CASES))
def test_escaped_descendants_end_with_their_run(
    store_url: str, tmp_path: Path, reliability: Recorder, how: str, mode: str
) -> None:
    """`mode`: a cgroup per run where jobd may make one (skipped elsewhere), or the
    subreaper that jobd falls back to (forced with JOBD_RUN_CGROUPS=off)."""
    if mode == "cgroup" and containment_mode() != "cgroup":
        pytest.skip("jobd cannot make cgroups here (no writable cgroup v2)")
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    then, extra, expected = CASES[how]
    pids, main = tmp_path / "pids", tmp_path / "main"
    pids.touch()
    config = write_config(
        tmp_path / "jobd.toml",
        f'[jobd]\nlease_ttl = "3s"\nkill_grace = "{KILL_GRACE:g}s"\nshutdown_grace = "1s"\n'
        f"[jobs.escape]\nshell = {q(escape_script(pids, main, then))}\n{extra}",
    )
    env = {"JOBD_RUN_CGROUPS": "off"} if mode == "subreaper" else {}
    daemon = Daemon(config, store_url, tmp_path / "jobd.log", env=env)
    store = open_store(store_url)
    try:
        daemon.start()
        run_id = store.enqueue(NewRun("escape", Trigger.MANUAL, store.now()))
        wait_for(lambda: len(lines_of(pids)) >= 2 and lines_of(main), timeout=15)
        job_pids = [int(p) for p in lines_of(pids)] + [int(p) for p in lines_of(main)]
        if how == "cancel":
            store.request_cancel(run_id)
        elif how == "stop":
            os.kill(daemon.pid, signal.SIGTERM)
        elif how == "kill":
            daemon.kill()
        if how != "kill":
            run = wait_for(
                lambda: (r := store.execution(run_id)) is not None and r.status.final and r,
                timeout=20,
            )
            assert run.status is expected, (run.status, run.error, daemon.log())
        left = survivors(job_pids, timeout=KILL_GRACE + 5)
        limit = ""
        if how == "kill" and mode == "subreaper":
            # Documented: with neither a cgroup nor a live jobd to re-parent it,
            # a descendant that left the group and cleared its environment cannot
            # be told from any other process. All the others must be gone.
            cleared = [int(p) for p in lines_of(Path(f"{pids}.env-i"))]
            limit = f"; the env -i one survives without a cgroup: {left == cleared}"
            left = [p for p in left if p not in cleared]
        if how == "stop":
            assert daemon.proc is not None and daemon.proc.wait(timeout=20) == 0
        reliability.observe(
            "escape",
            backend,
            runs=1,
            duplicates=0,
            lost=0,
            orphans=len(left),
            stuck=0 if how == "kill" else stuck_rows(store),
            detail=f"setsid and env -i setsid descendants ({mode}); the run ends by: {how}{limit}",
        )
        assert not left, f"survived the run ({how}): {left}\n{daemon.log()}"
    finally:
        daemon.cleanup()
        for pid in [int(p) for p in lines_of(pids) + lines_of(main)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        store.close()


def test_a_new_daemon_removes_the_cgroups_of_gone_ones_only() -> None:
    """A daemon and its keeper both killed leave their run cgroups behind: the next
    jobd on the host removes those of dead processes, and no other."""
    from jobd.runs.containment import Containment, RunCgroup, own_cgroup_dir

    if containment_mode() != "cgroup":
        pytest.skip("jobd cannot make cgroups here (no writable cgroup v2)")
    directory = own_cgroup_dir()
    assert directory is not None
    ended = subprocess.Popen(["true"])
    ended.wait()
    gone = RunCgroup(os.path.join(directory, f"jobd.h-{ended.pid}-abcdef.run-1"))
    live = RunCgroup(os.path.join(directory, f"jobd.h-{os.getpid()}-abcdef.run-1"))
    try:
        for cgroup in (gone, live):
            cgroup.close_fd()
        Containment._remove_stale(directory)
        assert not os.path.exists(gone.path)
        assert os.path.exists(live.path)
    finally:
        gone.remove()
        live.remove()
