"""Fault: jobs that abuse their output. 50 MB as fast as a pipe takes it, one 10 MB
line, raw binary, invalid UTF-8 and NULs, all at once under a real daemon.

The daemon's resident memory is sampled from /proc while they run and after:
it must not grow with the output. The store keeps only the configured tail
(log_lines, and log_bytes in UTF-8) and the exact byte count. tests/test_runner.py
proves the tail's bounds on RunProcess alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.conftest import open_store, wait_for
from tests.faults import Daemon, q, rss_kb, stuck_rows, write_config
from tests.reliability import Recorder, sized

pytestmark = [pytest.mark.slow, pytest.mark.fault]

LOG_LINES = 200
LOG_BYTES = 65536
MB = 1024 * 1024


def jobs(flood_mb: int) -> dict[str, tuple[str, int]]:
    """name -> (shell line, bytes it writes)."""
    return {
        "flood": (
            f"yes 'jobd output abuse, line after line' | head -c {flood_mb * MB}",
            flood_mb * MB,
        ),
        "longline": (f"head -c {10 * MB} /dev/zero | tr '\\000' x; echo", 10 * MB + 1),
        "binary": (f"head -c {5 * MB} /dev/urandom", 5 * MB),
        "badutf8": (
            "i=0; while [ $i -lt 2000 ]; do printf 'ok \\377\\376 \\303\\050 \\000 end\\n'; "
            "i=$((i+1)); done",
            2000 * 15,
        ),
    }


def test_output_abuse_keeps_memory_and_store_bounded(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    flood_mb = sized(50, 50)
    table = jobs(flood_mb)
    text = f"[jobd]\nmax_concurrent = 4\nlog_lines = {LOG_LINES}\nlog_bytes = {LOG_BYTES}\n"
    text += "".join(f"[jobs.{name}]\nshell = {q(line)}\n" for name, (line, _n) in table.items())
    config = write_config(tmp_path / "jobd.toml", text)
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], rss_kb(daemon.pid))
            except OSError:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        daemon.start()
        # Warm up the paths a run takes (claim, runner thread, flush) before the baseline.
        warm = store.enqueue(NewRun("badutf8", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(warm).status.final, timeout=30)
        baseline = rss_kb(daemon.pid)
        sampler.start()
        started = time.monotonic()
        ids = {name: store.enqueue(NewRun(name, Trigger.MANUAL, store.now())) for name in table}
        wait_for(lambda: all(store.execution(i).status.final for i in ids.values()), timeout=120)
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        sampling.set()
        sampler.join()
        after = rss_kb(daemon.pid)
        runs = {name: store.execution(run_id) for name, run_id in ids.items()}
        assert daemon.stop() == 0
        growth_mb = (peak[0] - baseline) / 1024
        reliability.observe(
            "output",
            backend,
            runs=len(runs),
            duplicates=0,
            lost=sum(r.status is not Status.SUCCEEDED for r in runs.values()),
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail=f"{flood_mb + 15} MB of output in {elapsed:.1f}s: daemon RSS "
            f"{baseline // 1024} MB at rest, peak +{growth_mb:.1f} MB, "
            f"{(after - baseline) / 1024:+.1f} MB after; store kept <= {LOG_LINES} lines "
            f"and {LOG_BYTES // 1024} KiB per run",
        )
        for name, run in runs.items():
            assert run.status is Status.SUCCEEDED, (name, run.error)
            assert run.log_bytes == table[name][1], name
            assert len(run.log.encode()) <= LOG_BYTES, name
            assert run.log.count("\n") <= LOG_LINES, name
            assert "\x00" not in run.log
        line = "jobd output abuse, line after line\n"  # `head -c` cut the last one
        assert runs["flood"].log.endswith(line + line[: flood_mb * MB % len(line)])
        assert runs["longline"].log.strip("x\n") == ""
        assert "ok \ufffd\ufffd \ufffd( \ufffd end\n" in runs["badutf8"].log
        # Bounded: the tails are a few hundred KiB; 50 MB passing through must not show.
        assert growth_mb < 24, f"daemon RSS grew {growth_mb:.1f} MB"
        assert (after - baseline) / 1024 < 16
        if backend == "sqlite":
            db = Path(store_url[len("sqlite:///") :])
            size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
            assert size < 8 * MB, f"store files take {size / MB:.1f} MB"
    finally:
        sampling.set()
        daemon.cleanup()
        store.close()
