"""The daemon enforces `history` retention by itself (at start, then hourly)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Outcome, Status, Trigger
from tests.conftest import finish_run, jobd_cmd, open_store, wait_for


def test_daemon_prunes_history_to_keep(tmp_path: Path) -> None:
    config_text = '[jobd]\nhistory = { keep = 3 }\n[jobs.report]\ncommand = ["true"]\n'
    config = tmp_path / "jobd.toml"
    config.write_text(config_text)
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    store = open_store(url)
    store.apply_config(parse_config(config_text), store.now())
    for _ in range(10):
        run_id = store.enqueue(NewRun("report", Trigger.MANUAL, store.now()))
        store.claim_run(run_id, "old", "h")
        finish_run(store, run_id, "old", Outcome(Status.SUCCEEDED, 0))
    daemon = subprocess.Popen(
        jobd_cmd("--config", str(config), "run"),
        env={**os.environ, "JOBD_STORE": url},
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(store.executions(job="report", limit=None)) == 3, timeout=20)
        kept = [run.id for run in store.executions(job="report", limit=None)]
        assert kept == [10, 9, 8]  # the newest stay
        wait_for(lambda: any(e["action"] == "prune" for e in store.audit_events()), timeout=20)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        store.close()
