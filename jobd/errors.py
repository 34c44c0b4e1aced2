"""Error types, and the one table that maps them to exit codes (SPEC section 5)
and HTTP statuses (SPEC section 8): STATUSES, below them. The API and the Python
client map problems back to these types by name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # the awaited run failed, `check` is unhealthy, a request was refused
    USAGE = 2  # bad arguments or configuration: one line, no traceback
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the store or a daemon needed is not there
    TEMPFAIL = 75  # EX_TEMPFAIL: refused by a quota, try later
    TIMEOUT = 124  # as timeout(1): the awaited run timed out
    INTERRUPTED = 130  # 128 + SIGINT: the waiting user pressed Ctrl-C


class JobdError(Exception):
    """Base of every error a user may see; its message is one line."""

    exit_code: ExitCode = ExitCode.FAILURE
    http_status: int = 400


class UsageError(JobdError):
    """Bad arguments or input: a command line, a request, a value."""


class ConfigError(UsageError):
    """A configuration problem, located by file, job and key."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        job: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.job = job
        self.key = key
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        # repr quotes like 'name' and escapes a newline in a quoted TOML key, so
        # the message stays one line.
        if self.job:
            where.append(f"job {self.job!r}")
        if self.key:
            where.append(f"key {self.key!r}")
        text = ": ".join([*where, self.message])
        if self.hint:
            text += f" ({self.hint})"
        return text

    def located(self, file: str) -> ConfigError:
        return ConfigError(self.message, file=file, job=self.job, key=self.key, hint=self.hint)


class NotFound(UsageError):
    """An unknown job name or execution id."""


class InvalidState(JobdError):
    """A request that the current state forbids, e.g. cancelling a finished run."""


class StoreUnavailable(JobdError):
    """The store cannot be reached or read."""


class StoreTooNew(StoreUnavailable):
    """The store was written by a newer jobd; it is refused, never modified."""


class StoreValueRefused(JobdError):
    """The store is there but refused a value (too long, a broken constraint): not an
    outage, and waiting for the store would not help."""


class NoDaemon(JobdError):
    """No live daemon would run what was asked for."""


class NotApplied(NoDaemon):
    """A config-file job that no daemon has applied to the store yet, so none would run it."""


class QuotaRefused(JobdError):
    """A group's quota refused the request; it may be allowed later."""


# Refusals of the HTTP API (and of the Python client over it).
class Unauthorized(JobdError):
    """No token, or one that is unknown, revoked or expired."""


class Forbidden(JobdError):
    """A read-only token asked for a write."""


class ServerBusy(JobdError):
    """Every worker the API may spend on waiting (long polls, log follows) is taken."""


class MethodNotAllowed(UsageError):
    """An HTTP method that the path does not take."""


class PayloadTooLarge(UsageError):
    """A request body over the API's limit."""


# The one table: what each error exits with, and answers over HTTP. A type not
# named here (StoreTooNew, NotApplied, ...) takes its nearest named base's pair.
STATUSES: dict[type[JobdError], tuple[ExitCode, int]] = {
    JobdError: (ExitCode.FAILURE, 400),
    UsageError: (ExitCode.USAGE, 400),
    ConfigError: (ExitCode.USAGE, 422),
    NotFound: (ExitCode.USAGE, 404),
    MethodNotAllowed: (ExitCode.USAGE, 405),
    PayloadTooLarge: (ExitCode.USAGE, 413),
    InvalidState: (ExitCode.FAILURE, 409),
    Unauthorized: (ExitCode.FAILURE, 401),
    Forbidden: (ExitCode.FAILURE, 403),
    QuotaRefused: (ExitCode.TEMPFAIL, 429),
    ServerBusy: (ExitCode.TEMPFAIL, 503),
    StoreUnavailable: (ExitCode.UNAVAILABLE, 503),
    NoDaemon: (ExitCode.UNAVAILABLE, 503),
}
for _kind, (_exit_code, _http_status) in STATUSES.items():
    _kind.exit_code, _kind.http_status = _exit_code, _http_status


def problem_type(error: type[JobdError]) -> str:
    """The RFC 9457 `type` of an error: urn:jobd:problem:not-found for NotFound."""

    return "urn:jobd:problem:" + re.sub(r"(?<!^)(?=[A-Z])", "-", error.__name__).lower()


def error_type(problem: str) -> type[JobdError]:
    """The error type that problem_type() named (JobdError for one it did not)."""
    pending: list[type[JobdError]] = [JobdError]
    while pending:
        kind = pending.pop()
        if problem_type(kind) == problem:
            return kind
        pending.extend(kind.__subclasses__())
    return JobdError


# Exceptions of the database drivers and the ORM, found by module so that this
# module imports none of them.
_STORE_MODULES = ("peewee", "sqlite3", "psycopg2", "playhouse")
# DB-API error classes (every driver and peewee name them so) about the data, not
# about reaching the store.
_REFUSALS = {"DataError", "IntegrityError"}


def store_failure(exc: BaseException) -> JobdError | None:
    """A database error that escaped the store as the one-line error a command
    reports, or None: StoreUnavailable (exit 69) for disk full, connection lost, a
    damaged file; StoreValueRefused (exit 1) for a value the store would not take."""
    mro = type(exc).__mro__
    drivers = {c.__module__.split(".")[0] for c in mro}
    if not drivers.intersection(_STORE_MODULES) or not isinstance(exc, Exception):
        return None
    first = first_line(exc)
    if _REFUSALS.intersection(c.__name__ for c in mro):
        return StoreValueRefused(f"the store refused a value: {first}")
    return StoreUnavailable(f"store error: {first}")


def first_line(exc: BaseException, default: str | None = None) -> str:
    """An exception's message as one line (drivers' messages run over several):
    its first line, or `default` (else the exception's type) when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else (default or type(exc).__name__)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice, or None when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None
