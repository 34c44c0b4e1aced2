"""Group quotas at the command line, as real processes on both backends: trigger and
schedule refused with exit 75 and audited, prune by max_retained, status and list
showing usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.clihelp import add_instance
from tests.conftest import run_jobd

CONFIG = """
[jobd]
lease_ttl = "30s"
[groups.tenant-a]
max_active = 2
max_jobs = 3
max_retained = 2
[groups.tenant-b]
[jobs.scan_a1]
command = ["true"]
group = "tenant-a"
[jobs.scan_a2]
command = ["true"]
group = "tenant-a"
[jobs.scan_b]
command = ["true"]
group = "tenant-b"
[jobs.plain]
command = ["true"]
"""


@pytest.fixture
def home(tmp_path: Path, store_url: str, store: Any) -> dict[str, Any]:
    config = tmp_path / "jobd.toml"
    config.write_text(CONFIG)
    applied = run_jobd("run", "--once", "--config", str(config), "--store", store_url)
    assert applied.returncode == 0, applied.stderr
    add_instance(store)  # a live daemon, as far as `jobd trigger` can tell
    return {"config": str(config), "store": store_url, "db": store}


def jobd(home: dict[str, Any], *args: str) -> Any:
    return run_jobd("--config", home["config"], "--store", home["store"], *args)


def queue(store: Any, job: str, status: Status = Status.QUEUED) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, store.now(), status=status))


def test_trigger_over_max_active_is_refused_with_75_and_audited(home: dict[str, Any]) -> None:
    store = home["db"]
    first = jobd(home, "trigger", "scan_a1")
    assert first.returncode == 0, first.stderr
    queue(store, "scan_a2")
    before = len(store.executions(limit=None))
    refused = jobd(home, "trigger", "scan_a2")
    assert refused.returncode == 75
    assert refused.stderr.strip() == (
        "jobd: scan_a2: refused: group 'tenant-a' is at its quota: 2 of max_active = 2 "
        "runs queued or running; try again later"
    )
    assert len(store.executions(limit=None)) == before  # nothing queued
    event = store.audit_events(1)[0]
    assert (event["action"], event["target"]) == ("quota.refused", "scan_a2")
    assert event["detail"]["group"] == "tenant-a" and event["detail"]["request"] == "trigger"
    assert "@" in event["actor"]
    # Other groups and jobs without one are not limited.
    assert jobd(home, "trigger", "scan_b").returncode == 0
    assert jobd(home, "trigger", "plain").returncode == 0
    shown = jobd(home, "audit", "--json")
    assert "quota.refused" in {e["action"] for e in json.loads(shown.stdout)}


def test_schedule_into_a_full_group_is_refused(home: dict[str, Any]) -> None:
    store = home["db"]
    made = jobd(home, "schedule", "scan_a3", "0 1 * * *", "--group", "tenant-a", "--", "true")
    assert made.returncode == 0, made.stderr
    assert store.job("scan_a3").spec.group == "tenant-a"
    refused = jobd(home, "schedule", "scan_a4", "0 1 * * *", "--group", "tenant-a", "--", "true")
    assert refused.returncode == 75
    assert "3 of max_jobs = 3 jobs" in refused.stderr
    assert store.job("scan_a4") is None
    event = store.audit_events(1)[0]
    assert (event["action"], event["detail"]["request"]) == ("quota.refused", "schedule")
    # Changing a job already in the group is not adding one.
    again = jobd(home, "schedule", "scan_a3", "0 2 * * *", "--group", "tenant-a", "--", "true")
    assert again.returncode == 0, again.stderr
    unknown = jobd(home, "schedule", "x", "0 1 * * *", "--group", "tenant_a", "--", "true")
    assert unknown.returncode == 2 and "did you mean 'tenant-a'?" in unknown.stderr


def test_prune_enforces_max_retained_per_group(home: dict[str, Any]) -> None:
    store = home["db"]
    ids = [queue(store, job, Status.SUCCEEDED) for job in ["scan_a1", "scan_a2", "scan_b"] * 2]
    queue(store, "scan_a1")  # queued: stays
    dry = jobd(home, "prune", "--keep", "0", "--older-than", "0", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["groups"] == {"tenant-a": 2} and report["deleted"] == {"scan_a1": 1, "scan_a2": 1}
    done = jobd(home, "prune", "--keep", "0", "--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert "group tenant-a: newest 2 kept (2 run(s))" in done.stderr
    left = {r.id for r in store.executions(limit=None)}
    assert ids[0] not in left and ids[1] not in left  # the oldest two of tenant-a
    assert {ids[3], ids[4], ids[2], ids[5]} <= left
    assert store.audit_events(1)[0]["detail"]["groups"] == {"tenant-a": 2}


def test_status_and_list_show_usage_against_quotas(home: dict[str, Any]) -> None:
    store = home["db"]
    queue(store, "scan_a1")
    queue(store, "scan_a2", Status.SUCCEEDED)
    report = json.loads(jobd(home, "status", "--json").stdout)
    assert report["groups"] == [
        {
            "group": "tenant-a",
            "jobs": 2,
            "max_jobs": 3,
            "active": 1,
            "max_active": 2,
            "retained": 1,
            "max_retained": 2,
        },
        {
            "group": "tenant-b",
            "jobs": 1,
            "max_jobs": 0,
            "active": 0,
            "max_active": 0,
            "retained": 0,
            "max_retained": 0,
        },
    ]
    text = jobd(home, "status").stdout
    assert ["GROUP", "ACTIVE", "JOBS", "RETAINED"] in [line.split() for line in text.splitlines()]
    assert ["tenant-a", "1/2", "2/3", "1/2"] in [line.split() for line in text.splitlines()]
    listed = {j["name"]: j for j in json.loads(jobd(home, "list", "--json").stdout)}
    assert listed["scan_a1"]["group"] == "tenant-a" and listed["plain"]["group"] is None
    lines = jobd(home, "list").stdout.splitlines()
    assert lines[0].split()[-2:] == ["GROUP", "(ACTIVE)"]
    row = next(line for line in lines if line.startswith("scan_a2"))
    assert row.split()[-2:] == ["tenant-a", "(1/2)"]
