"""The domain's vocabulary: statuses, triggers, policies, job specs and settings.

One source of truth for every fixed name and default; the docs and the CLI read them here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # its instance vanished while it ran
    SKIPPED = "skipped"  # the overlap policy declined the fire

    @property
    def final(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


FINAL_STATUSES = tuple(s for s in Status if s.final)
ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    CHAIN = "chain"
    CATCHUP = "catchup"


class Overlap(StrEnum):
    SKIP = "skip"  # a fire while a run is active is recorded as skipped
    QUEUE = "queue"  # it waits for the active run to end
    ALLOW = "allow"  # it runs alongside
    REPLACE = "replace"  # the active run is cancelled, the new one runs


class Catchup(StrEnum):
    NONE = "none"  # fires missed while down are dropped
    LATEST = "latest"  # only the most recent missed fire runs
    ALL = "all"  # every missed fire runs, oldest first, capped


class LeaderMode(StrEnum):
    AUTO = "auto"
    FILE = "file"
    TABLE = "table"


class Source(StrEnum):
    FILE = "file"
    CLI = "cli"


class JobKind(StrEnum):
    COMMAND = "command"  # argv, never through a shell
    SHELL = "shell"  # /bin/sh -c, explicit opt-in
    CALL = "call"  # module:function, called in a child process
    SQL = "sql"  # a statement run by `python -m jobd.runs.kinds.sql` in a child process
    HTTP = "http"  # a request made by `python -m jobd.runs.kinds.http` in a child process


# Defaults, in one place: config parsing, docs and `validate` read these.
DEFAULT_TIMEZONE = "UTC"
DEFAULT_MAX_CONCURRENT = 4
DEFAULT_HISTORY_KEEP = 1000
DEFAULT_HISTORY_MAX_AGE = 90 * 86400.0
DEFAULT_LOG_LINES = 1000
DEFAULT_LOG_BYTES = 256 * 1024
DEFAULT_LEASE_TTL = 30.0
DEFAULT_SHUTDOWN_GRACE = 30.0
DEFAULT_KILL_GRACE = 5.0
DEFAULT_MAX_BACKOFF = 900.0
DEFAULT_RETRY_DELAY = 30.0
DEFAULT_RETRY_DELAY_MAX = 3600.0
DEFAULT_CATCHUP_WINDOW = 86400.0
CATCHUP_CAP = 100  # missed slots replayed per job at most, with a warning beyond
# A slot fired more than this after its time, counted from the start of the round
# of firing that reached it, was missed: the daemon was stopped, cut off from the
# store or not woken, and the job's catchup policy decides. APScheduler's default
# misfire grace time; a busy round (thousands of jobs due at once) is not late.
MISFIRE_GRACE = 1.0
MAX_CLOCK_SKEW_WARN = 2.0
DEFAULT_MAX_CLOCK_SKEW = 30.0
SQL_ROWS_SHOWN = 20  # rows of a `sql` job's result printed to its log
HTTP_BODY_SHOWN = 2048  # bytes of an `http` job's response body printed to its log
# Notifications ([notify.NAME] channels, a job's notify and notify_on, ping_url).
NOTIFY_EVENTS = ("failed", "timed_out", "abandoned", "cancelled", "succeeded", "recovered")
DEFAULT_NOTIFY_ON = ("failed", "timed_out", "abandoned", "recovered")
DEFAULT_NOTIFY_RETRIES = 8  # 2 s doubling: a receiver away for about 8 minutes still hears
DEFAULT_NOTIFY_RETRY_DELAY = 2.0
NOTIFY_RETRY_DELAY_MAX = 300.0
DEFAULT_NOTIFY_TIMEOUT = 10.0
NOTIFY_TAIL_LINES = 50  # the output tail a notification or a /fail ping carries
NOTIFY_TAIL_BYTES = 8192
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# `database = "store"`: an sql job that runs in jobd's own (PostgreSQL) store. Kept
# as this word, never as the URL: the store's password never enters a job's spec.
STORE_DATABASE = "store"


@dataclass(frozen=True, slots=True)  # slots: a daemon may hold 10,000 of these
class JobSpec:
    """One job's definition, validated. Durations are seconds."""

    name: str
    schedule: str | None  # None: only triggered manually or by a chain
    kind: JobKind
    command: tuple[str, ...] = ()
    shell: str = ""
    call: str = ""
    sql: str = ""
    # A postgresql:// or sqlite:/// URL, `${VAR}` filled in at run time; None: the store.
    database: str | None = None
    # method, url, headers, json or body, expect; `${VAR}` filled in at run time.
    http: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # a [groups.NAME] quota the job counts against
    description: str = ""
    timezone: str = DEFAULT_TIMEZONE
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    jitter: float = 0.0
    overlap: Overlap = Overlap.SKIP
    catchup: Catchup = Catchup.LATEST
    catchup_window: float = DEFAULT_CATCHUP_WINDOW
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()
    cwd: str | None = None
    user: str | None = None
    on_success: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    enabled: bool = True
    source: Source = Source.FILE
    # [notify.NAME] channels told of its outcomes; None: the [jobd] default.
    notify: tuple[str, ...] | None = None
    notify_on: tuple[str, ...] | None = None  # None: the [jobd] default
    ping_url: str | None = None  # healthchecks.io-style check-in URL

    def to_json(self) -> str:
        # What asdict() would give, without its deep copies (a third of the time):
        # the fields are JSON values already, and json writes a tuple as a list.
        # Optional fields left unset are left out, so that the specs (and digests)
        # of jobs that do not use them stay what an older jobd stored.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        for name in _OMITTED_WHEN_NONE:
            if data[name] is None:
                del data[name]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """The spec stored as `text` (a store keeps parsed ones for a tick: see
        jobd.store.specs)."""
        data: dict[str, Any] = json.loads(text)
        # Lookups rather than Enum calls: the daemon parses thousands at a time.
        data["kind"] = _KINDS[data["kind"]]
        data["overlap"] = _OVERLAPS[data["overlap"]]
        data["catchup"] = _CATCHUPS[data["catchup"]]
        data["source"] = _SOURCES[data["source"]]
        for key in ("command", "secret_env", "on_success", "on_failure"):
            data[key] = tuple(data.get(key) or ())
        for key in ("notify", "notify_on"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        # Not cls(**data): matching 26 keyword arguments whose names json made
        # (not interned) costs more than the JSON decoding itself, 10 µs a spec, and
        # a daemon parses a thousand due jobs in one tick. The values were checked
        # when the config was applied; unknown keys (a newer jobd) are left out.
        spec = _new_spec(cls)
        for name, put, default in _SPEC_SLOTS:
            try:
                put(spec, data[name])
            except KeyError:  # stored by an older jobd
                if default is MISSING:
                    raise TypeError(f"stored job spec lacks {name!r}") from None
                put(spec, default())
        return spec

    @property
    def config_hash(self) -> str:
        return spec_text_hash(self.to_json())

    @property
    def digest(self) -> str:
        """The whole SHA-256 of the spec, for checking a stored spec against the
        config: config_hash's 12 digits name a spec; they are too few to vouch for
        one that someone may have crafted to match them."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def target(self) -> str:
        """What the job runs, for display; env values are never part of it."""
        if self.kind is JobKind.COMMAND:
            return " ".join(self.command)
        if self.kind is JobKind.SHELL:
            return self.shell
        if self.kind is JobKind.SQL:
            return self.sql
        if self.kind is JobKind.HTTP:
            return f"{self.http.get('method', 'GET')} {self.http.get('url', '')}"
        return self.call


def spec_text_hash(text: str) -> str:
    """The config hash of a stored spec, from its text (to_json() writes it)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_FIELD_NAMES = tuple(f.name for f in fields(JobSpec))
_OMITTED_WHEN_NONE = ("notify", "notify_on", "ping_url")
_KINDS = {k.value: k for k in JobKind}
_OVERLAPS = {o.value: o for o in Overlap}
_CATCHUPS = {c.value: c for c in Catchup}
_SOURCES = {s.value: s for s in Source}


def _default_of(f: Any) -> Any:
    """A field's default as a maker of fresh values, or MISSING."""
    if f.default_factory is not MISSING:
        return f.default_factory
    if f.default is not MISSING:
        return lambda: f.default
    return MISSING


_new_spec = object.__new__
# (field, its slot's setter, _default_of(field))
_SPEC_SLOTS = tuple(
    (f.name, getattr(JobSpec, f.name).__set__, _default_of(f)) for f in fields(JobSpec)
)


@dataclass(frozen=True)
class GroupQuota:
    """A `[groups.NAME]` table: limits shared by the jobs with `group = NAME`; 0 = unlimited."""

    name: str
    max_active: int = 0  # queued + running runs across the group's jobs
    max_jobs: int = 0  # jobs in the group, file and `jobd schedule` ones together
    max_retained: int = 0  # final runs kept across the group's jobs (newest first)


@dataclass(frozen=True)
class Settings:
    """The `[jobd]` table."""

    store: str | None = None  # None: the platform's default SQLite file
    timezone: str = DEFAULT_TIMEZONE
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    history_keep: int = DEFAULT_HISTORY_KEEP
    history_max_age: float = DEFAULT_HISTORY_MAX_AGE
    log_lines: int = DEFAULT_LOG_LINES
    log_bytes: int = DEFAULT_LOG_BYTES
    leader: LeaderMode = LeaderMode.AUTO
    lease_ttl: float = DEFAULT_LEASE_TTL
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    kill_grace: float = DEFAULT_KILL_GRACE
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
    notify: tuple[str, ...] = ()  # channels of jobs that name none
    notify_on: tuple[str, ...] = DEFAULT_NOTIFY_ON


@dataclass(frozen=True)
class NotifyChannel:
    """A `[notify.NAME]` table: where a job's outcomes are told.

    Secrets are never held here, only the names of the environment variables
    that hold them (`secret_env`, `password_env`), read when a message is sent.
    """

    name: str
    type: str  # "webhook" or "email"
    url: str = ""  # webhook
    secret_env: str | None = None  # webhook: the HMAC-SHA256 key's variable
    signature_header: str = "X-Jobd-Signature-256"
    host: str = ""  # email: the SMTP server
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    sender: str = ""
    recipients: tuple[str, ...] = ()
    timeout: float = DEFAULT_NOTIFY_TIMEOUT
    retries: int = DEFAULT_NOTIFY_RETRIES
    retry_delay: float = DEFAULT_NOTIFY_RETRY_DELAY


@dataclass(frozen=True)
class ApiSettings:
    """The `[api]` table: where `jobd run` serves the HTTP API."""

    host: str
    port: int
    threads: int = 8  # concurrent requests; a long poll or a log follow holds one
    tls_cert: str | None = None  # PEM certificate chain: HTTPS on `listen` (with tls_key)
    tls_key: str | None = None  # PEM private key, readable by its owner only


@dataclass(frozen=True)
class Config:
    settings: Settings
    jobs: dict[str, JobSpec]
    path: str | None = None
    databases: dict[str, str] = field(default_factory=dict)  # name → URL, for `sql` jobs
    groups: dict[str, GroupQuota] = field(default_factory=dict)
    api: ApiSettings | None = None  # None: `jobd run` serves no API
    channels: dict[str, NotifyChannel] = field(default_factory=dict)  # [notify.NAME]
    metrics_listen: str | None = None  # [metrics] listen = "host:port"

    def digests(self) -> dict[str, str]:
        """What each config job must be when it runs: name → JobSpec.digest."""
        return {name: spec.digest for name, spec in self.jobs.items()}


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run about to be recorded: a fire, a retry, a chain or a manual trigger."""

    job: str
    trigger: Trigger
    not_before: datetime
    scheduled_for: datetime | None = None
    attempt: int = 1
    retry_of: int | None = None
    triggered_by: str | None = None
    status: Status = Status.QUEUED
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One recorded execution; datetimes are aware UTC."""

    id: int
    job: str
    trigger: Trigger
    status: Status
    queued_at: datetime
    not_before: datetime
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    attempt: int = 1
    retry_of: int | None = None
    error: str | None = None
    instance: str | None = None
    host: str | None = None
    pid: int | None = None
    triggered_by: str | None = None
    config_hash: str | None = None
    cancel_requested: bool = False
    log: str = ""
    log_bytes: int = 0
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as the runner saw it."""

    status: Status
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None


class Presence(StrEnum):
    """What jobd makes of an instance that has not stopped."""

    LIVE = "live"
    DEAD = "dead"  # its lock is free: the process is gone
    STALE = "stale"  # no lock to ask, and no heartbeat within the lease ttl


def presence_by_heartbeat(heartbeat_at: datetime | None, ttl: float, now: datetime) -> Presence:
    """The judgement where no liveness lock can be asked (PostgreSQL, another host)."""
    fresh = heartbeat_at is not None and (now - heartbeat_at).total_seconds() <= ttl
    return Presence.LIVE if fresh else Presence.STALE
