"""The example files in contrib/examples/ parse, and do what their comments say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobd.core.config.parse import ENV_NAME, parse_config, schedule_env_names
from jobd.core.model import LeaderMode
from tests.conftest import run_jobd, wait_for
from tests.daemons import jobd_daemon

EXAMPLES = Path(__file__).resolve().parent.parent / "contrib" / "examples"
MULTI_HOST = EXAMPLES / "multi-host.toml"
ENV_FILE = EXAMPLES / "jobd.env"


def read_env_file(path: Path) -> dict[str, str]:
    """The subset of systemd's EnvironmentFile= syntax the example uses: VAR="value"."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        assert ENV_NAME.match(name), line
        assert re.fullmatch(r'"[^"\\$`]*"', value), f"quote values, nothing to expand: {line}"
        values[name] = value[1:-1]
    return values


def test_multi_host_example_parses() -> None:
    config = parse_config(MULTI_HOST.read_text(), str(MULTI_HOST))
    settings = config.settings
    assert settings.store is not None and settings.store.startswith("postgresql://")
    assert ":" not in settings.store.split("//", 1)[1].split("@")[0], "no password in the file"
    assert settings.leader is LeaderMode.TABLE
    assert settings.lease_ttl == 20
    assert settings.shutdown_grace + settings.kill_grace < 45  # the units' stop timeout
    assert "drift_detection" in config.jobs


def test_env_file_overrides_apply_to_the_multi_host_example() -> None:
    environ = read_env_file(ENV_FILE)
    plain = parse_config(MULTI_HOST.read_text(), str(MULTI_HOST))
    config = parse_config(MULTI_HOST.read_text(), str(MULTI_HOST), environ)
    assert config.settings.store == environ["JOBD_STORE"]
    overridden = {k for k in environ if k.endswith("_SCHEDULE")}
    assert overridden, "the example shows schedule overrides"
    for name in overridden:
        # Every override names a job of the example, so trying it shows an effect.
        job = next(j for j in config.jobs if name in schedule_env_names(j))
        assert config.jobs[job].schedule == environ[name] != plain.jobs[job].schedule


def test_env_file_reads_the_same_in_a_shell() -> None:
    """The comment says `set -a; . ./jobd.env`; a shell must see what systemd sees."""
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    script = 'set -a; . "$1"; exec "$2" -c "$3"'
    result = subprocess.run(
        ["/bin/sh", "-c", script, "sh", ENV_FILE, sys.executable, dump],
        capture_output=True,
        text=True,
        timeout=30,
        env={},
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for name, value in read_env_file(ENV_FILE).items():
        assert seen[name] == value


def test_every_contrib_path_the_docs_name_exists() -> None:
    """README.md, the man page and the service files point at contrib/; no dead links."""
    root = EXAMPLES.parent.parent
    docs = [root / "README.md", root / "man" / "jobd.toml.5", *root.glob("contrib/*/*")]
    named = set()
    for doc in docs:
        named |= set(re.findall(r"contrib/[\w./-]*\w", doc.read_text()))
    assert "contrib/systemd/jobd.service" in named
    missing = sorted(path for path in named if not (root / path).exists())
    assert not missing


def test_readme_and_man_pages_stand_alone() -> None:
    """They are read from a checkout or an installed package: nothing they point at
    may lie outside the repository (a spec or style guide of the developers)."""
    root = EXAMPLES.parent.parent
    for doc in [root / "README.md", *root.glob("man/*.[0-9]"), *root.glob("docs/*.md")]:
        text = doc.read_text()
        assert not re.search(r"\bSPEC\b|STYLE\.md|\.\./shared|shared/", text), doc.name
        for link in re.findall(r"\]\(([^)#]+)\)", text):  # Markdown links to files
            if "://" not in link:
                assert (doc.parent / link).exists(), f"{doc.name}: {link}"


# -- one example per kind of user (the seeds jobd replaces) ------------------------------

PARITY_EXAMPLES = ["infraaudit.toml", "opsdeck.toml", "pgcron.toml", "multi-tenant.toml"]


@pytest.mark.parametrize("name", PARITY_EXAMPLES)
def test_parity_example_validates(name: str) -> None:
    result = run_jobd("validate", "--config", str(EXAMPLES / name))
    assert result.returncode == 0, result.stderr
    assert f"{name}: ok" in result.stderr


def test_infraaudit_example_keeps_the_five_default_schedules_and_env_overrides() -> None:
    path = EXAMPLES / "infraaudit.toml"
    text = path.read_text()
    config = parse_config(text, str(path))
    assert {name: spec.schedule for name, spec in config.jobs.items()} == {
        "resource_sync": "0 */6 * * *",
        "drift_detection": "0 */4 * * *",
        "vulnerability_scan": "0 2 * * *",
        "cost_sync": "0 3 * * *",
        "compliance_check": "0 4 * * *",
    }
    # Every override the header shows is the seed's variable, and it works.
    overrides = dict(re.findall(r'^#\s+([A-Z_]+_SCHEDULE)="([^"]+)"$', text, re.M))
    assert len(overrides) == 5
    overridden = parse_config(text, str(path), overrides)
    for variable, schedule in overrides.items():
        job = next(j for j in config.jobs if variable in schedule_env_names(j))
        assert overridden.jobs[job].schedule == schedule != config.jobs[job].schedule


def test_opsdeck_example_has_daily_weekly_and_monthly_jobs() -> None:
    path = EXAMPLES / "opsdeck.toml"
    config = parse_config(path.read_text(), str(path))
    schedules = {spec.schedule for spec in config.jobs.values()}
    assert {"0 9 * * mon", "0 3 * * *", "0 6 1 * *", "*/5 * * * *"} <= schedules
    assert "--log-format json" in path.read_text()


def test_multi_tenant_example_has_groups_with_quotas() -> None:
    path = EXAMPLES / "multi-tenant.toml"
    config = parse_config(path.read_text(), str(path))
    assert config.settings.store is not None and config.settings.store.startswith("postgresql")
    assert config.groups["tenant-a"].max_active == 2
    assert config.groups["tenant-a"].max_retained == 5000
    assert {spec.group for spec in config.jobs.values()} == {"tenant-a", "tenant-b", "operators"}


@pytest.mark.slow
def test_pgcron_example_runs_the_sync_after_the_recompute(
    tmp_path: Path, postgres_url: str, postgres_admin: Any
) -> None:
    """The real example on the real PostgreSQL: the recompute fires (its schedule
    overridden to every second through the environment, as an operator would), and
    the sync runs when it has ended, never alongside."""
    schema = postgres_url.rsplit("%3D", 1)[1]
    with postgres_admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {schema}.calls (fn text, at timestamptz DEFAULT clock_timestamp());"
            f"CREATE FUNCTION {schema}.fn_recompute_all_tenant_risk_scores() RETURNS void"
            f" LANGUAGE sql AS $$ INSERT INTO {schema}.calls (fn) VALUES ('recompute_start');"
            f" SELECT pg_sleep(1); INSERT INTO {schema}.calls (fn) VALUES ('recompute_end') $$;"
            f"CREATE FUNCTION {schema}.fn_trigger_nightly_sync() RETURNS void"
            f" LANGUAGE sql AS $$ INSERT INTO {schema}.calls (fn) VALUES ('sync') $$;"
            f"CREATE FUNCTION {schema}.fn_refresh_expiring_tokens() RETURNS void"
            f" LANGUAGE sql AS $$ SELECT $$"
        )
    config = tmp_path / "pgcron.toml"
    config.write_text((EXAMPLES / "pgcron.toml").read_text())
    env = {"NIGHTLY_RISK_RECOMPUTE_SCHEDULE": "* * * * * *"}
    with jobd_daemon(config, postgres_url, env=env):

        def calls() -> list[str] | None:
            with postgres_admin.cursor() as cur:
                cur.execute(f"SELECT fn FROM {schema}.calls ORDER BY at")
                seen = [row[0] for row in cur.fetchall()]
            return seen if "sync" in seen else None

        seen = wait_for(calls, timeout=30)
    assert seen[:3] == ["recompute_start", "recompute_end", "sync"]
