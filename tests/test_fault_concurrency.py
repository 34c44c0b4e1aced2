"""Fault: a crowd of `jobd` processes on one store at once, with a daemon running.

100 `jobd trigger` processes (some with --wait) start together, alongside
readers (`executions`, `status`): none may see "database is locked" or any
traceback, each gets its run id, and each run executes exactly once.
tests/test_store.py shows concurrent writers in threads; these are processes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from jobd.core.model import Status
from tests.conftest import jobd_cmd, open_store, wait_for
from tests.faults import Daemon, duplicates, lines_of, q, stuck_rows, write_config
from tests.reliability import Recorder, sized

pytestmark = [pytest.mark.slow, pytest.mark.fault]


def test_concurrent_triggers_never_see_a_locked_store_and_run_once(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    triggers = sized(25, 100)
    waiting = triggers // 10
    readers = triggers // 5
    ran = tmp_path / "ran"
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nmax_concurrent = 4\n[jobs.hit]\noverlap = "allow"\n'
        f"shell = {q(f'echo $JOBD_EXECUTION_ID >> {ran}')}\n",
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        daemon.start()
        env = daemon.env
        for index in range(triggers + readers):
            if index < triggers:
                args = ["trigger", "hit", *(["--wait"] if index < waiting else [])]
            else:
                args = ["executions", "--json"] if index % 2 else ["status", "--json"]
            proc = subprocess.Popen(
                jobd_cmd("--config", str(config), *args),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append((args[0], proc))
        results = [(kind, *proc.communicate(timeout=240), proc.returncode) for kind, proc in procs]
        # stderr stays empty, but for the outcome line of a `trigger --wait`.
        problems = [
            (kind, code, err.strip()[-300:])
            for kind, _out, err, code in results
            if code != 0 or re.sub(r"run \d+ \(hit\) succeeded in \S+\n", "", err).strip()
        ]
        ids = [
            int(out.split()[0])
            for kind, out, _e, code in results
            if kind == "trigger" and code == 0
        ]
        wait_for(lambda: len(lines_of(ran)) >= len(ids) and stuck_rows(store) == 0, timeout=120)
        executed = [int(x) for x in lines_of(ran)]
        runs = store.executions(job="hit", limit=None)
        assert daemon.stop() == 0
        reliability.observe(
            "concurrency",
            backend,
            runs=len(runs),
            ran=len(set(executed)),
            duplicates=duplicates(executed),
            lost=len(set(ids) - set(executed)),
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail=f"{triggers} `jobd trigger` ({waiting} with --wait) and {readers} readers "
            f"started at once: {len(problems)} errors on stderr",
        )
        assert not problems, problems[:5]
        assert sorted(ids) == sorted(r.id for r in runs)
        assert sorted(executed) == sorted(ids)
        assert {r.status for r in runs} == {Status.SUCCEEDED}
        assert "locked" not in daemon.full_log()
    finally:
        for _kind, proc in procs:
            if proc.poll() is None:
                proc.kill()
        daemon.cleanup()
        store.close()
