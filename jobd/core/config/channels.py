"""The `[notify.NAME]` and `[metrics]` tables, and a job's notify keys. Pure.

Every problem is a ConfigError naming the file, the job and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from jobd.core import model
from jobd.core.config.fields import ENV_NAME, Fields, check_keys, listen_address, named_tables
from jobd.core.model import NotifyChannel
from jobd.errors import ConfigError, did_you_mean

CHANNEL_TYPES = ("webhook", "email")
COMMON_KEYS = ("type", "timeout", "retries", "retry_delay")
WEBHOOK_KEYS = (*COMMON_KEYS, "url", "secret_env", "signature_header")
EMAIL_KEYS = (
    *COMMON_KEYS,
    "host",
    "port",
    "starttls",
    "username",
    "password_env",
    "from",
    "to",
)
METRICS_KEYS = ("listen",)
HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
# An address as SMTP carries it: no spaces, no angle brackets, one @.
MAIL_ADDRESS = re.compile(r"[^\s<>@,;]+@[^\s<>@,;]+")


def notify_tables(raw: Mapping[str, Any], file: str) -> dict[str, NotifyChannel]:
    """The `[notify.NAME]` tables, validated."""
    channels: dict[str, NotifyChannel] = {}
    for name, prefix, table in named_tables(raw, file, "notify", "channel"):
        f = Fields(table, file, None, prefix=prefix)
        kind = f.str("type")
        if kind is None:
            raise ConfigError(
                f"required: one of {' | '.join(CHANNEL_TYPES)}", file=file, key=prefix + "type"
            )
        if kind not in CHANNEL_TYPES:
            raise ConfigError(
                f"expected one of {' | '.join(CHANNEL_TYPES)}, got {kind!r}",
                file=file,
                key=prefix + "type",
                hint=did_you_mean(kind, CHANNEL_TYPES),
            )
        check_keys(
            table,
            WEBHOOK_KEYS if kind == "webhook" else EMAIL_KEYS,
            file=file,
            job=None,
            prefix=prefix,
        )
        common = {
            "timeout": f.duration("timeout", model.DEFAULT_NOTIFY_TIMEOUT, positive=True)
            or model.DEFAULT_NOTIFY_TIMEOUT,
            "retries": f.int("retries", model.DEFAULT_NOTIFY_RETRIES, minimum=0),
            "retry_delay": f.duration("retry_delay", model.DEFAULT_NOTIFY_RETRY_DELAY) or 0.0,
        }
        build = _webhook if kind == "webhook" else _email
        channels[name] = build(f, prefix, name=name, type=kind, **common)
    return channels


def _webhook(f: Fields, prefix: str, **common: Any) -> NotifyChannel:
    url = _required(f, "url", f.file, prefix)
    _check_http_url(url, f.file, None, prefix + "url")
    header = f.str("signature_header") or NotifyChannel.signature_header
    if not HEADER_NAME.fullmatch(header):
        raise ConfigError(
            "expected an HTTP header name", file=f.file, key=prefix + "signature_header"
        )
    secret_env = _env_name(f, "secret_env", f.file, prefix)
    return NotifyChannel(url=url, secret_env=secret_env, signature_header=header, **common)


def _email(f: Fields, prefix: str, **common: Any) -> NotifyChannel:
    file = f.file
    host = _required(f, "host", file, prefix)
    port = f.int("port", NotifyChannel.port, minimum=1)
    if port > 65535:
        raise ConfigError("must be at most 65535", file=file, key=prefix + "port")
    sender = _required(f, "from", file, prefix)
    recipients = f.str_list("to")
    if not recipients:
        raise ConfigError("required: at least one address", file=file, key=prefix + "to")
    for address, key in [(sender, "from"), *((r, "to") for r in recipients)]:
        if not MAIL_ADDRESS.fullmatch(address):
            raise ConfigError(f"not a mail address: {address!r}", file=file, key=prefix + key)
    username = f.str("username")
    password_env = _env_name(f, "password_env", file, prefix)
    if password_env and not username:
        raise ConfigError("password_env needs a username", file=file, key=prefix + "password_env")
    return NotifyChannel(
        host=host,
        port=port,
        starttls=f.bool("starttls", True),
        username=username,
        password_env=password_env,
        sender=sender,
        recipients=recipients,
        **common,
    )


def metrics_listen(raw: Mapping[str, Any], file: str) -> str | None:
    """`[metrics] listen = "host:port"`, validated; None when not set."""
    check_keys(raw, METRICS_KEYS, file=file, job=None, prefix="metrics.")
    listen = Fields(raw, file, None, prefix="metrics.").str("listen")
    if listen is None:
        return None
    listen_address(
        listen, file, "metrics.listen", example="127.0.0.1:9464", any_host=True, any_port=False
    )
    return listen


def split_listen(listen: str) -> tuple[str, int]:
    """("127.0.0.1", 9464) from "127.0.0.1:9464"; ("", port) means every address."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def channel_names(
    f: Fields,
    key: str,
    channels: Mapping[str, NotifyChannel] | None,
    file: str,
    job: str | None,
) -> tuple[str, ...] | None:
    """A `notify` list; each name must be a [notify.NAME] table when the
    channels are known (None: a job made with `jobd schedule`)."""
    if key not in f.raw:
        return None
    names = f.str_list(key)
    for name in names:
        if channels is not None and name not in channels:
            raise ConfigError(
                f"unknown notification channel {name!r} (define it as [notify.{name}])",
                file=file,
                job=job,
                key=f.prefix + key,
                hint=did_you_mean(name, channels),
            )
    return names


def notify_events(f: Fields, key: str, file: str, job: str | None) -> tuple[str, ...] | None:
    if key not in f.raw:
        return None
    events = f.str_list(key)
    for event in events:
        if event not in model.NOTIFY_EVENTS:
            raise ConfigError(
                f"unknown outcome {event!r}; expected some of {', '.join(model.NOTIFY_EVENTS)}",
                file=file,
                job=job,
                key=f.prefix + key,
                hint=did_you_mean(event, model.NOTIFY_EVENTS),
            )
    return events


def ping_url(f: Fields, file: str, job: str) -> str | None:
    url = f.str("ping_url")
    if url is not None:
        _check_http_url(url, file, job, "ping_url")
    return url


def _required(f: Fields, key: str, file: str, prefix: str) -> str:
    value = f.str(key)
    if not value:
        raise ConfigError("required", file=file, key=prefix + key)
    return value


def _env_name(f: Fields, key: str, file: str, prefix: str) -> str | None:
    name = f.str(key)
    if name is not None and not ENV_NAME.fullmatch(name):
        raise ConfigError(
            f"expected the name of an environment variable, got {name!r}",
            file=file,
            key=prefix + key,
        )
    return name


def _check_http_url(url: str, file: str, job: str | None, key: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        # The URL itself is not repeated: a check-in URL is as good as a password.
        raise ConfigError("expected an http:// or https:// URL", file=file, job=job, key=key)
