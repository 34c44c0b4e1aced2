"""`jobd.toml` text → a validated Config. Pure: the caller passes the text and the environment.

Every problem is a ConfigError naming the file, the job and the key, with a
did-you-mean hint for near-miss keys.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from jobd.core import model
from jobd.core.config.channels import (
    channel_names,
    metrics_listen,
    notify_events,
    notify_tables,
    ping_url,
)
from jobd.core.config.fields import ENV_NAME, JOB_NAME
from jobd.core.config.fields import Fields as _Fields
from jobd.core.config.fields import check_keys as _check_keys
from jobd.core.config.fields import table as _table
from jobd.core.config.kinds import (
    api_table,
    databases_table,
    groups_table,
    http_request,
    resolve_database,
)
from jobd.core.cron import CronError, parse_schedule
from jobd.core.model import (
    Catchup,
    Config,
    GroupQuota,
    JobKind,
    JobSpec,
    LeaderMode,
    Overlap,
    Settings,
)
from jobd.core.urls import check_store_url
from jobd.errors import ConfigError, did_you_mean

CALL_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)

TOP_KEYS = ("jobd", "jobs", "databases", "groups", "api", "notify", "metrics")
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
    "notify",
    "notify_on",
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
    "database",
    "group",
    "notify",
    "notify_on",
    "ping_url",
)


def schedule_env_names(job: str) -> tuple[str, str]:
    """The environment variables that override a job's schedule, strongest first."""
    stem = re.sub(r"[^A-Z0-9]", "_", job.upper())
    return f"JOBD_{stem}_SCHEDULE", f"{stem}_SCHEDULE"


def parse_config(
    text: str,
    file: str = "jobd.toml",
    environ: Mapping[str, str] | None = None,
    store_override: str | None = None,
) -> Config:
    """Parse and validate config text. Raises ConfigError only.

    `store_override` is a `--store` URL: it wins over $JOBD_STORE and the file's
    `store`, and is checked like them, so that a config means the same thing
    whichever way the store was named.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=file) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError("TOML syntax error: nested too deeply", file=file) from None
    return config_from_data(data, file, environ or {}, store_override)


def settings_only(
    text: str, file: str, environ: Mapping[str, str], store_override: str | None = None
) -> Config:
    """The `[jobd]` table of a config whose full parse failed, and no jobs.

    A broken job must not lock an operator out of the store that a daemon
    keeps using (it runs on its last good config): commands that need only the
    store and the settings go on with this. When the file is not TOML, the
    `[jobd]` table is read on its own, but only when the syntax error lies in
    a jobs, groups or databases table: an error anywhere else may hide the
    real `store`. Raises ConfigError when the settings cannot be trusted.
    """
    try:
        data: Any = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        where = LINE_OF_ERROR.search(str(exc))
        line = int(where.group(1)) if where else None
        if "at end of document" in str(exc):
            line = max(1, len(text.splitlines()))
        if line is None or _table_at(text, line) not in SALVAGEABLE:
            raise ConfigError("the [jobd] table cannot be read apart", file=file) from None
        try:
            data = tomllib.loads(_table_text(text, "jobd"))
        except (tomllib.TOMLDecodeError, RecursionError):
            raise ConfigError("the [jobd] table cannot be read apart", file=file) from None
    jobd_table = _table(data.get("jobd", {}), file, None, "jobd")
    return Config(settings=_settings(jobd_table, file, environ, store_override), jobs={}, path=file)


TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]*?)\s*\]")
LINE_OF_ERROR = re.compile(r"at line (\d+)")
# Top-level tables whose syntax errors cannot change the [jobd] settings.
SALVAGEABLE = ("jobs", "groups", "databases")


def _top_table(header: str) -> str:
    return header.strip().strip('"').split(".", 1)[0].strip().strip('"')


def _table_at(text: str, line_number: int) -> str | None:
    """The top-level table that line `line_number` (1-based) belongs to; None
    before any header. A broken header line counts for the table it names."""
    table = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = TABLE_HEADER.match(line)
        if header:
            table = _top_table(header.group(1))
        elif number == line_number and line.lstrip().startswith("["):
            return _top_table(line.lstrip().lstrip("["))
        if number == line_number:
            return table
    return table


def _table_text(text: str, name: str) -> str:
    """The lines of one top-level table and its sub-tables."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        header = TABLE_HEADER.match(line)
        if header:
            inside = _top_table(header.group(1)) == name
        elif line.lstrip().startswith("["):  # a broken header ends the table too
            inside = False
        if inside:
            kept.append(line)
    return "\n".join(kept)


def _check_across_jobs(
    jobs: Mapping[str, JobSpec], groups: Mapping[str, GroupQuota], file: str
) -> None:
    """What no one job can check: chains name real jobs, groups hold no more than
    their max_jobs."""
    for spec in jobs.values():
        for key in ("on_success", "on_failure"):
            for target in getattr(spec, key):
                if target not in jobs:
                    hint = did_you_mean(target, jobs)
                    raise ConfigError(
                        f"unknown job {target!r}", file=file, job=spec.name, key=key, hint=hint
                    )
    for quota in groups.values():
        members = sum(1 for spec in jobs.values() if spec.group == quota.name)
        if quota.max_jobs and members > quota.max_jobs:
            raise ConfigError(
                f"{members} jobs name this group, more than max_jobs = {quota.max_jobs}",
                file=file,
                key=f"groups.{quota.name}.max_jobs",
            )


def config_from_data(
    data: Mapping[str, Any],
    file: str,
    environ: Mapping[str, str],
    store_override: str | None = None,
) -> Config:
    _check_keys(data, TOP_KEYS, file=file, job=None, prefix="")
    settings = _settings(
        _table(data.get("jobd", {}), file, None, "jobd"), file, environ, store_override
    )
    databases = databases_table(_table(data.get("databases", {}), file, None, "databases"), file)
    groups = groups_table(_table(data.get("groups", {}), file, None, "groups"), file)
    channels = notify_tables(_table(data.get("notify", {}), file, None, "notify"), file)
    for name in settings.notify:
        if name not in channels:
            raise ConfigError(
                f"unknown notification channel {name!r} (define it as [notify.{name}])",
                file=file,
                key="jobd.notify",
                hint=did_you_mean(name, channels),
            )
    listen = metrics_listen(_table(data.get("metrics", {}), file, None, "metrics"), file)
    jobs_table = _table(data.get("jobs", {}), file, None, "jobs")
    jobs: dict[str, JobSpec] = {}
    for name, raw in jobs_table.items():
        jobs[name] = parse_job(
            name,
            _table(raw, file, name, None),
            file,
            environ,
            settings.timezone,
            databases=databases,
            groups=groups,
            store=settings.store,
            channels=channels,
        )
    _check_across_jobs(jobs, groups, file)
    api = api_table(_table(data.get("api", {}), file, None, "api"), file)
    return Config(
        settings=settings,
        jobs=jobs,
        path=file,
        databases=databases,
        groups=groups,
        api=api,
        channels=channels,
        metrics_listen=listen,
    )


def parse_job(
    name: str,
    raw: Mapping[str, Any],
    file: str,
    environ: Mapping[str, str],
    default_tz: str = model.DEFAULT_TIMEZONE,
    source: model.Source = model.Source.FILE,
    *,
    databases: Mapping[str, str] | None = None,
    groups: Mapping[str, GroupQuota] | None = None,
    store: str | None = None,
    channels: Mapping[str, model.NotifyChannel] | None = None,
) -> JobSpec:
    """Validate one job table; also used for jobs created with `jobd schedule`.

    `databases`, `groups` and `channels` are the config's tables that `database`,
    `group` and `notify` may name (`channels` None: not checked); `store` is the
    store URL, the default database of `sql` jobs.
    """
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
    shell = call = sql = ""
    http: dict[str, Any] = {}
    database = f.str("database")
    if database is not None and kind is not JobKind.SQL:
        raise ConfigError("only `sql` jobs take a database", file=file, job=name, key="database")
    if kind is JobKind.COMMAND:
        command = f.str_list("command", required=True)
        if not command:
            raise ConfigError("must not be empty", file=file, job=name, key="command")
    elif kind is JobKind.SHELL:
        shell = f.str("shell", required=True) or ""
        if not shell.strip():
            raise ConfigError("must not be empty", file=file, job=name, key="shell")
    elif kind is JobKind.SQL:
        sql = f.str("sql", required=True) or ""
        if not sql.strip():
            raise ConfigError("must not be empty", file=file, job=name, key="sql")
        database = resolve_database(database, databases or {}, store, file, name)
    elif kind is JobKind.HTTP:
        http = http_request(_table(raw["http"], file, name, "http"), file, name)
    else:
        call = f.str("call", required=True) or ""
        if not CALL_TARGET.fullmatch(call):
            raise ConfigError("expected 'module:function'", file=file, job=name, key="call")
    group = f.str("group")
    if group is not None and group not in (groups or {}):
        raise ConfigError(
            f"unknown group {group!r} (define it as [groups.{group}])",
            file=file,
            job=name,
            key="group",
            hint=did_you_mean(group, groups or {}),
        )

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
        sql=sql,
        database=database,
        http=http,
        group=group,
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
        notify=channel_names(f, "notify", channels, file, name),
        notify_on=notify_events(f, "notify_on", file, name),
        ping_url=ping_url(f, file, name),
    )


def _settings(
    raw: Mapping[str, Any], file: str, environ: Mapping[str, str], store_override: str | None
) -> Settings:
    _check_keys(raw, SETTINGS_KEYS, file=file, job=None, prefix="jobd.")
    f = _Fields(raw, file, None, prefix="jobd.")
    history = _table(raw.get("history", {}), file, None, "jobd.history")
    _check_keys(history, HISTORY_KEYS, file=file, job=None, prefix="jobd.history.")
    h = _Fields(history, file, None, prefix="jobd.history.")
    timezone = f.str("timezone") or model.DEFAULT_TIMEZONE
    _check_timezone(timezone, file, None, "jobd.timezone")
    if store_override:
        store: str | None = store_override
        check_store_url(store_override, "--store", None)
    elif environ.get("JOBD_STORE"):
        store = environ["JOBD_STORE"]
        check_store_url(environ["JOBD_STORE"], "environment", "JOBD_STORE")
    else:
        store = f.str("store")
        if store is not None:
            check_store_url(store, file, "jobd.store")
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
        notify=channel_names(f, "notify", None, file, None) or (),
        notify_on=notify_events(f, "notify_on", file, None) or model.DEFAULT_NOTIFY_ON,
    )


def _check_timezone(name: str, file: str, job: str | None, key: str) -> None:
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfo raises several types for odd names
        hint = did_you_mean(name, available_timezones()) if isinstance(name, str) else None
        raise ConfigError(
            f"unknown time zone {name!r}", file=file, job=job, key=key, hint=hint
        ) from None
