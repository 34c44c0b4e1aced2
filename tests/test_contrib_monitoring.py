"""contrib/prometheus: the alert rules load, and their unit tests (series that
make each alert fire, and stay quiet) pass under promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

PROMETHEUS = Path(__file__).resolve().parent.parent / "contrib" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is missing in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_the_rules_load() -> None:
    done = run("check", "rules", "jobd.rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_each_alert_fires_and_stays_quiet_as_its_series_say() -> None:
    done = run("test", "rules", "jobd.rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_test() -> None:
    rules = (PROMETHEUS / "jobd.rules.yml").read_text()
    tests = (PROMETHEUS / "jobd.rules.test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) == 5
    for alert in alerts:
        assert f"alertname: {alert}" in tests, alert
