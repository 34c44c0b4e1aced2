"""The man pages: lint-clean, and jobd.toml(5) in step with config.py and model.py.

config.py and model.py are the source of truth for keys and defaults; these
tests fail when a key is added without documenting it, or a default changes
without the page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from jobd.core import model
from jobd.core.config import parse as config
from jobd.core.config.parse import parse_config
from jobd.core.durations import parse_duration
from tests.conftest import IN_CI

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = ["jobd.1", "jobd.toml.5"]
TOML5 = (MAN / "jobd.toml.5").read_text()


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing in CI (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def unroff(text: str) -> str:
    """Roff escapes used in the page's examples, back to the characters they print."""
    for escape, char in (("\\-", "-"), ("\\(aq", "'"), ("\\(dq", '"'), ("\\ ", " "), ("\\&", "")):
        text = text.replace(escape, char)
    return text.replace("\\e", "\\")


def section(title: str) -> str:
    match = re.search(rf"^\.SH {re.escape(title)}\n(.*?)(?=^\.SH )", TOML5, re.M | re.S)
    assert match, title
    return match.group(1)


def entries(title: str) -> dict[str, str]:
    """`.TP` / `.B key` entries of a section: key → the entry's source text."""
    found = {}
    parts = re.split(r"^\.TP\n\.B (\S+)\n", section(title), flags=re.M)
    for key, body in zip(parts[1::2], parts[2::2], strict=True):
        found[key] = body
    return found


SETTINGS = entries("THE [jobd] TABLE")
JOBS = entries("THE [jobs.NAME] TABLES")


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_is_clean(page: str) -> None:
    result = subprocess.run(
        [require("mandoc"), "-Tlint", "-Wwarning", str(MAN / page)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout


@pytest.mark.parametrize("page", PAGES)
def test_groff_warns_about_nothing(page: str) -> None:
    result = subprocess.run(
        [require("groff"), "-man", "-ww", "-z", str(MAN / page)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_every_settings_key_is_documented_and_no_other() -> None:
    expected = {k for k in config.SETTINGS_KEYS if k != "history"}
    expected |= {f"history.{k}" for k in config.HISTORY_KEYS}
    assert set(SETTINGS) == expected


def test_every_job_key_is_documented_and_no_other() -> None:
    assert set(JOBS) == set(config.JOB_KEYS)


DEFAULTS = {
    "timezone": model.DEFAULT_TIMEZONE,
    "max_concurrent": model.DEFAULT_MAX_CONCURRENT,
    "history.keep": model.DEFAULT_HISTORY_KEEP,
    "history.max_age": model.DEFAULT_HISTORY_MAX_AGE,
    "log_lines": model.DEFAULT_LOG_LINES,
    "log_bytes": model.DEFAULT_LOG_BYTES,
    "leader": model.LeaderMode.AUTO.value,
    "lease_ttl": model.DEFAULT_LEASE_TTL,
    "shutdown_grace": model.DEFAULT_SHUTDOWN_GRACE,
    "kill_grace": model.DEFAULT_KILL_GRACE,
    "max_backoff": model.DEFAULT_MAX_BACKOFF,
    "max_clock_skew": model.DEFAULT_MAX_CLOCK_SKEW,
    "retries": model.JobSpec.__dataclass_fields__["retries"].default,
    "retry_delay": model.DEFAULT_RETRY_DELAY,
    "jitter": model.JobSpec.__dataclass_fields__["jitter"].default,
    "overlap": model.Overlap.SKIP.value,
    "catchup": model.Catchup.LATEST.value,
    "catchup_window": model.DEFAULT_CATCHUP_WINDOW,
    "enabled": model.JobSpec.__dataclass_fields__["enabled"].default,
}


@pytest.mark.parametrize(("key", "expected"), DEFAULTS.items())
def test_documented_default_matches_the_model(key: str, expected: object) -> None:
    body = SETTINGS.get(key) or JOBS[key]
    match = re.search(r"default \\fB(.+?)\\fR", body)
    assert match, f"{key}: no 'default \\fB...\\fR' in its entry"
    stated = match.group(1)
    if isinstance(expected, bool):
        assert stated == str(expected).lower()
    elif isinstance(expected, int):
        assert int(stated) == expected
    elif isinstance(expected, float):
        assert parse_duration(stated) == expected
    else:
        assert stated == expected


def test_limits_in_the_text_match_the_model() -> None:
    assert f"at most {model.CATCHUP_CAP}." in JOBS["catchup"]
    assert model.DEFAULT_RETRY_DELAY_MAX == 3600 and "one hour" in JOBS["retry_delay"]
    assert model.MAX_CLOCK_SKEW_WARN == 2 and "above 2 seconds" in SETTINGS["max_clock_skew"]


# The channels the examples of `notify` name.
CHANNELS = "".join(
    f'[notify.{name}]\ntype = "webhook"\nurl = "https://hooks.example.org/{name}"\n'
    for name in ("ops", "mail")
)


def _example(body: str) -> str:
    match = re.search(r"For example:\n\.EX\n(.*?)\n\.EE", body, re.S)
    assert match
    return unroff(match.group(1))


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_settings_example_is_valid(key: str) -> None:
    snippet = _example(SETTINGS[key])
    assert snippet.startswith(key.split(".")[0] + " =")
    parse_config("[jobd]\n" + snippet + "\n" + CHANNELS, "jobd.toml(5)")


@pytest.mark.parametrize("key", sorted(JOBS))
def test_job_example_is_valid(key: str) -> None:
    snippet = _example(JOBS[key])
    assert snippet.startswith(key + " =")
    text = '[jobd]\nstore = "postgresql://jobd@db/jobd"\n[jobs.example]\n' + snippet + "\n"
    if key == "database":
        text += 'sql = "SELECT 1"\n'
    elif key == "sql":
        text += 'database = "store"\n'
    elif key not in config.KIND_KEYS:
        text += 'command = ["true"]\n'
    if key == "group":
        text += f"[groups.{tomllib.loads(snippet)[key]}]\n"
    if key == "notify":  # the channels must exist
        text += CHANNELS
    if key in ("on_success", "on_failure"):  # the chained jobs must exist
        for target in tomllib.loads(snippet)[key]:
            text += f'[jobs.{target}]\ncommand = ["true"]\n'
    parse_config(text, "jobd.toml(5)")


def test_full_example_is_valid() -> None:
    match = re.search(r"\.EX\n(.*?)\n\.EE", section("EXAMPLES"), re.S)
    assert match
    parsed = parse_config(unroff(match.group(1)), "jobd.toml(5) EXAMPLES")
    assert set(parsed.jobs) == {"backup", "backup_report", "page_oncall", "health"}
    assert parsed.jobs["backup"].command[1] == "--format=custom"
