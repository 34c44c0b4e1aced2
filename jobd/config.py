"""`jobd.toml` text → a validated Config. Pure: the caller passes the text and the environment.

Every problem is a ConfigError naming the file, the job and the key, with a
did-you-mean hint for near-miss keys.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from jobd import model
from jobd.cron import CronError, parse_schedule
from jobd.durations import MAX_DURATION, DurationError, parse_duration
from jobd.errors import ConfigError, did_you_mean
from jobd.model import Catchup, Config, JobKind, JobSpec, LeaderMode, Overlap, Settings

# Used with fullmatch: with match, `$` also accepts a trailing newline ("a\n").
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
CALL_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)
MAX_INT = 2**31 - 1
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TOP_KEYS = ("jobd", "jobs")
SETTINGS_KEYS = (
    "store",
    "timezone",
    "max_concurrent",
    "history",
    "log_lines",
    "log_bytes",
    "leader",
    "lease_ttl",
    "shutdown_grace",
    "kill_grace",
    "max_backoff",
    "max_clock_skew",
)
HISTORY_KEYS = ("keep", "max_age")
KIND_KEYS = tuple(kind.value for kind in JobKind)
JOB_KEYS = (
    "description",
    "schedule",
    "timezone",
    *KIND_KEYS,
    "timeout",
    "retries",
    "retry_delay",
    "jitter",
    "overlap",
    "catchup",
    "catchup_window",
    "env",
    "secret_env",
    "cwd",
    "user",
    "on_success",
    "on_failure",
    "enabled",
)


def schedule_env_names(job: str) -> tuple[str, str]:
    """The environment variables that override a job's schedule, strongest first."""
    stem = re.sub(r"[^A-Z0-9]", "_", job.upper())
    return f"JOBD_{stem}_SCHEDULE", f"{stem}_SCHEDULE"


def parse_config(
    text: str, file: str = "jobd.toml", environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate config text. Raises ConfigError only."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=file) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError("TOML syntax error: nested too deeply", file=file) from None
    return config_from_data(data, file, environ or {})


def config_from_data(data: Mapping[str, Any], file: str, environ: Mapping[str, str]) -> Config:
    _check_keys(data, TOP_KEYS, file=file, job=None, prefix="")
    settings = _settings(_table(data.get("jobd", {}), file, None, "jobd"), file, environ)
    jobs_table = _table(data.get("jobs", {}), file, None, "jobs")
    jobs: dict[str, JobSpec] = {}
    for name, raw in jobs_table.items():
        jobs[name] = parse_job(
            name, _table(raw, file, name, None), file, environ, settings.timezone
        )
    for spec in jobs.values():
        for key in ("on_success", "on_failure"):
            for target in getattr(spec, key):
                if target not in jobs:
                    hint = did_you_mean(target, jobs)
                    raise ConfigError(
                        f"unknown job {target!r}", file=file, job=spec.name, key=key, hint=hint
                    )
    return Config(settings=settings, jobs=jobs, path=file)


def parse_job(
    name: str,
    raw: Mapping[str, Any],
    file: str,
    environ: Mapping[str, str],
    default_tz: str = model.DEFAULT_TIMEZONE,
    source: model.Source = model.Source.FILE,
) -> JobSpec:
    """Validate one job table; also used for jobs created with `jobd schedule`."""
    if not JOB_NAME.fullmatch(name):
        raise ConfigError(
            "invalid job name (letters, digits, '_', '.', '-'; at most 128)",
            file=file,
            job=name,
        )
    _check_keys(raw, JOB_KEYS, file=file, job=name, prefix="")
    f = _Fields(raw, file, name)

    kinds = [k for k in KIND_KEYS if k in raw]
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        raise ConfigError(
            f"exactly one of {', '.join(KIND_KEYS)} is required, found {what}",
            file=file,
            job=name,
            key=kinds[-1] if kinds else None,  # the one to delete
        )
    kind = JobKind(kinds[0])
    command: tuple[str, ...] = ()
    shell = call = ""
    if kind is JobKind.COMMAND:
        command = f.str_list("command", required=True)
        if not command:
            raise ConfigError("must not be empty", file=file, job=name, key="command")
    elif kind is JobKind.SHELL:
        shell = f.str("shell", required=True) or ""
        if not shell.strip():
            raise ConfigError("must not be empty", file=file, job=name, key="shell")
    else:
        call = f.str("call", required=True) or ""
        if not CALL_TARGET.fullmatch(call):
            raise ConfigError("expected 'module:function'", file=file, job=name, key="call")

    schedule = f.str("schedule")
    schedule_key = "schedule"
    for env_name in schedule_env_names(name):
        if environ.get(env_name):
            schedule, schedule_key, file_or_env = environ[env_name], env_name, "environment"
            break
    else:
        file_or_env = file
    if schedule is not None:
        try:
            parse_schedule(schedule)
        except CronError as exc:
            raise ConfigError(str(exc), file=file_or_env, job=name, key=schedule_key) from None

    timezone = f.str("timezone") or default_tz
    _check_timezone(timezone, file, name, "timezone")

    env = f.str_map("env")
    secret_env = f.str_list("secret_env")
    for key in env:
        if not ENV_NAME.fullmatch(key):
            raise ConfigError(f"invalid variable name {key!r}", file=file, job=name, key="env")

    retries = f.int("retries", 0, minimum=0)
    return JobSpec(
        name=name,
        schedule=" ".join(schedule.split()) if schedule is not None else None,
        kind=kind,
        command=command,
        shell=shell,
        call=call,
        description=f.str("description") or "",
        timezone=timezone,
        timeout=f.duration("timeout", None, positive=True),
        retries=retries,
        retry_delay=f.duration("retry_delay", model.DEFAULT_RETRY_DELAY) or 0.0,
        jitter=f.duration("jitter", 0.0) or 0.0,
        overlap=f.choice("overlap", Overlap, Overlap.SKIP),
        catchup=f.choice("catchup", Catchup, Catchup.LATEST),
        catchup_window=f.duration("catchup_window", model.DEFAULT_CATCHUP_WINDOW) or 0.0,
        env=env,
        secret_env=secret_env,
        cwd=f.str("cwd"),
        user=f.str("user"),
        on_success=f.str_list("on_success"),
        on_failure=f.str_list("on_failure"),
        enabled=f.bool("enabled", True),
        source=source,
    )


def _settings(raw: Mapping[str, Any], file: str, environ: Mapping[str, str]) -> Settings:
    _check_keys(raw, SETTINGS_KEYS, file=file, job=None, prefix="jobd.")
    f = _Fields(raw, file, None, prefix="jobd.")
    history = _table(raw.get("history", {}), file, None, "jobd.history")
    _check_keys(history, HISTORY_KEYS, file=file, job=None, prefix="jobd.history.")
    h = _Fields(history, file, None, prefix="jobd.history.")
    timezone = f.str("timezone") or model.DEFAULT_TIMEZONE
    _check_timezone(timezone, file, None, "jobd.timezone")
    if environ.get("JOBD_STORE"):
        store: str | None = environ["JOBD_STORE"]
        _check_store_url(environ["JOBD_STORE"], "environment", "JOBD_STORE")
    else:
        store = f.str("store")
        if store is not None:
            _check_store_url(store, file, "jobd.store")
    return Settings(
        store=store,
        timezone=timezone,
        max_concurrent=f.int("max_concurrent", model.DEFAULT_MAX_CONCURRENT, minimum=1),
        history_keep=h.int("keep", model.DEFAULT_HISTORY_KEEP, minimum=0),
        history_max_age=h.duration("max_age", model.DEFAULT_HISTORY_MAX_AGE) or 0.0,
        log_lines=f.int("log_lines", model.DEFAULT_LOG_LINES, minimum=0),
        log_bytes=f.int("log_bytes", model.DEFAULT_LOG_BYTES, minimum=0),
        leader=f.choice("leader", LeaderMode, LeaderMode.AUTO),
        lease_ttl=f.duration("lease_ttl", model.DEFAULT_LEASE_TTL, positive=True)
        or model.DEFAULT_LEASE_TTL,
        shutdown_grace=f.duration("shutdown_grace", model.DEFAULT_SHUTDOWN_GRACE) or 0.0,
        kill_grace=f.duration("kill_grace", model.DEFAULT_KILL_GRACE) or 0.0,
        max_backoff=f.duration("max_backoff", model.DEFAULT_MAX_BACKOFF, positive=True)
        or model.DEFAULT_MAX_BACKOFF,
        max_clock_skew=f.duration("max_clock_skew", model.DEFAULT_MAX_CLOCK_SKEW, positive=True)
        or model.DEFAULT_MAX_CLOCK_SKEW,
    )


def _check_store_url(url: str, file: str, key: str) -> None:
    sqlite_path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else None
    if sqlite_path == "" or (
        sqlite_path is None and not url.startswith(("postgresql://", "postgres://"))
    ):
        raise ConfigError(
            "expected sqlite:////absolute/path.db or postgresql://user@host/db",
            file=file,
            key=key,
        )


def _check_timezone(name: str, file: str, job: str | None, key: str) -> None:
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfo raises several types for odd names
        raise ConfigError(f"unknown time zone {name!r}", file=file, job=job, key=key) from None


def _table(value: Any, file: str, job: str | None, key: str | None) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {_type_name(value)}", file=file, job=job, key=key)
    return value


def _check_keys(
    raw: Mapping[str, Any], allowed: tuple[str, ...], *, file: str, job: str | None, prefix: str
) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                "unknown key", file=file, job=job, key=prefix + key, hint=did_you_mean(key, allowed)
            )


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


class _Fields:
    """Typed getters over one table, raising ConfigError that names the key."""

    def __init__(
        self, raw: Mapping[str, Any], file: str, job: str | None, prefix: str = ""
    ) -> None:
        self.raw, self.file, self.job, self.prefix = raw, file, job, prefix

    def _error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, job=self.job, key=self.prefix + key)

    def _get(self, key: str, check: Callable[[Any], bool], expected: str) -> Any:
        value = self.raw[key]
        if not check(value):
            raise self._error(key, f"expected {expected}, got {_type_name(value)}")
        return value

    def str(self, key: str, required: bool = False) -> str | None:
        if key not in self.raw:
            return None
        return self._get(key, lambda v: isinstance(v, str), "a string")

    def bool(self, key: str, default: bool) -> bool:
        if key not in self.raw:
            return default
        return self._get(key, lambda v: isinstance(v, bool), "true or false")

    def int(self, key: str, default: int, minimum: int | None = None) -> int:
        if key not in self.raw:
            return default
        value = self._get(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"
        )
        if minimum is not None and value < minimum:
            raise self._error(key, f"must be at least {minimum}")
        if value > MAX_INT:  # the stores' integers are 64-bit
            raise self._error(key, f"must be at most {MAX_INT}")
        return value

    def str_list(self, key: str, required: bool = False) -> tuple[str, ...]:
        if key not in self.raw:
            return ()
        value = self._get(
            key,
            lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
            "an array of strings",
        )
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str]:
        if key not in self.raw:
            return {}
        value = self._get(
            key,
            lambda v: isinstance(v, dict) and all(isinstance(i, str) for i in v.values()),
            "a table of strings",
        )
        return dict(value)

    def duration(self, key: str, default: float | None, positive: bool = False) -> float | None:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._error(key, f"expected a duration like '30s', got {_type_name(value)}")
        try:
            seconds = parse_duration(str(value)) if isinstance(value, str) else float(value)
        except DurationError as exc:
            raise self._error(key, str(exc)) from None
        except OverflowError:  # an int too large for a float
            raise self._error(key, "must be a finite, non-negative duration") from None
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise self._error(key, "must be a finite, non-negative duration")
        if seconds > MAX_DURATION:
            raise self._error(key, "must be at most 100 years")
        if positive and seconds == 0:
            raise self._error(key, "must be greater than zero")
        return seconds

    def choice(self, key: str, enum: type, default: Any) -> Any:
        if key not in self.raw:
            return default
        value = self._get(key, lambda v: isinstance(v, str), "a string")
        choices = [member.value for member in enum]
        if value not in choices:
            raise self._error(key, f"expected one of {' | '.join(choices)}, got {value!r}")
        return enum(value)
