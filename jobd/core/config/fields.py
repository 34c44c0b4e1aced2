"""Typed access to one TOML table, for config.py and config_kinds.py. Pure.

Every getter raises a ConfigError that names the file, the job and the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jobd.core.durations import MAX_DURATION, DurationError, parse_duration
from jobd.errors import ConfigError, did_you_mean

# Used with fullmatch: with match, `$` also accepts a trailing newline ("a\n").
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_INT = 2**31 - 1  # for every integer setting; far beyond any sensible value
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `[api] listen`, `[metrics] listen`: a name or address (IPv6 in brackets) and a port.
LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>\d{1,5})")


def table(value: Any, file: str, job: str | None, key: str | None) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type_name(value)}", file=file, job=job, key=key)
    return value


def named_tables(
    raw: Mapping[str, Any], file: str, section: str, what: str
) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Each `[section.NAME]` table with its name checked: (name, key prefix, table)."""
    for name, value in raw.items():
        if not JOB_NAME.fullmatch(name):
            raise ConfigError(
                f"invalid {what} name (letters, digits, '_', '.', '-'; at most 128)",
                file=file,
                key=f"{section}.{name}",
            )
        yield name, f"{section}.{name}.", table(value, file, None, f"{section}.{name}")


def listen_address(
    text: str | None, file: str, key: str, *, example: str, any_host: bool, any_port: bool
) -> tuple[str, int]:
    """(host, port) of a `listen` setting. `any_host`: an empty host means every
    address; `any_port`: port 0 means one the system picks."""
    match = LISTEN.fullmatch(text or "")
    if (
        match is None
        or not (0 if any_port else 1) <= int(match["port"]) <= 65535
        or not (any_host or match["host"])
    ):
        raise ConfigError(f"expected HOST:PORT, e.g. {example}, got {text!r}", file=file, key=key)
    return match["host"].strip("[]"), int(match["port"])


def check_keys(
    raw: Mapping[str, Any], allowed: tuple[str, ...], *, file: str, job: str | None, prefix: str
) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                "unknown key", file=file, job=job, key=prefix + key, hint=did_you_mean(key, allowed)
            )


def type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


class Fields:
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
            raise self._error(key, f"expected {expected}, got {type_name(value)}")
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
        if value > MAX_INT:
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
            raise self._error(key, f"expected a duration like '30s', got {type_name(value)}")
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
