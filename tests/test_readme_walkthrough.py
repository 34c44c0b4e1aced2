"""README's first ten minutes, run as written: `./run.sh` in one terminal, the
block of commands in another, against the default SQLite store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- first-minutes: the test suite runs this block as written -->"


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    after = readme.split(MARKER, 1)[1]
    block = re.match(r"\s*```sh\n(.*?)```", after, re.S)
    assert block, "the README's first-minutes block is not a ```sh block"
    return block.group(1)


def test_the_readme_walkthrough_works_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}
    for name in ("JOBD_CONFIG", "JOBD_STORE", "XDG_CONFIG_HOME"):
        env.pop(name, None)
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            ["bash", str(ROOT / "run.sh")], env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        wait_for(lambda: " started: " in log.read_text() or daemon.poll() is not None, 60)
        assert daemon.poll() is None, log.read_text()
        script = "set -euo pipefail\n" + walkthrough()
        result = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "heartbeat" in result.stdout and "disk_report" in result.stdout
        assert "Traceback" not in result.stderr
        # The runs are in the store that ./run.sh uses: the default one.
        assert (home / ".local" / "share" / "jobd" / "jobd.db").exists()
    finally:
        os.killpg(daemon.pid, signal.SIGINT)
        daemon.wait(30)
    assert "Traceback" not in log.read_text()
