"""The daemon's log lines: human (with or without journald), or ECS JSON; secrets masked.

Records carry their context as `extra={"action": ..., "job": ..., "execution_id": ...,
"instance": ...}`; every other extra key is printed too. Whatever the format, a
registered secret (a store password, an env value) never reaches the output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any

from jobd.core.masking import Masker
from jobd.core.urls import url_passwords

FORMATS = ("human", "json")
LEVELS = ("debug", "info", "warning", "error")
CONTEXT_KEYS = ("action", "job", "execution_id", "instance")
ECS_VERSION = "1.6.0"  # the ecs-logging spec's version, as the reference loggers report it
# Shorter values would blank out every small number and word in the log while
# protecting nothing a guess would not find; such env values are not secrets.
MIN_SECRET_LENGTH = 4

_ECS_NAMES = {
    "action": "event.action",
    "job": "jobd.job",
    "execution_id": "jobd.execution_id",
    "instance": "jobd.instance",
}
# The attributes every LogRecord has; anything else came from `extra=`.
_RECORD_ATTRS = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"]
)


_secrets = Masker(min_length=MIN_SECRET_LENGTH, url_passwords=True)


def add_secrets(values: Iterable[str]) -> None:
    """Mask these strings (env values, passwords) in every log line from now on."""
    _secrets.add(values)


def add_store_url(url: str) -> None:
    """Mask the store URL's password, as written and percent-decoded."""
    _secrets.add(url_passwords(url))


def clear_secrets() -> None:
    _secrets.clear()


def mask_secrets(text: str) -> str:
    """The text with every registered secret (in its encoded forms too) and every URL
    password replaced by ***."""
    return _secrets.mask(text)


def journal_stream_active(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether `stream` is systemd's journal connection, as JOURNAL_STREAM says.

    systemd.exec(5) says to compare the variable's device:inode with the stream:
    a job or a shell pipeline inherits the variable but not the connection.
    """
    value = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
    except ValueError:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True  # no descriptor to compare (a test's StringIO): trust the manager
    return (info.st_dev, info.st_ino) == (device, inode)


def syslog_priority(levelno: int) -> int:
    """sd-daemon(3) priority prefixes journald reads: <3> error ... <7> debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    found = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and v is not None}
    ordered = {k: found.pop(k) for k in CONTEXT_KEYS if k in found}
    ordered.update((k, v) for k, v in found.items() if not k.startswith("_"))
    return ordered


_NEEDS_QUOTES = re.compile(r'[\s"=\\]')


def _logfmt(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class HumanFormatter(logging.Formatter):
    """`2026-11-23T15:04:05Z INFO message key=value`; under journald `<6>INFO message ...`."""

    def __init__(self, journal: bool = False, masker: Masker | None = None) -> None:
        super().__init__()
        self.journal = journal
        self.masker = masker or _secrets

    def format(self, record: logging.LogRecord) -> str:
        # journald stamps every entry itself; a second time stamp is noise.
        parts = [] if self.journal else [_utc(record.created, millis=False)]
        mask = self.masker.mask
        parts += [record.levelname, mask(record.getMessage())]
        # Mask before quoting: quoting escapes characters a secret may contain.
        parts += [f"{key}={_logfmt(mask(str(value)))}" for key, value in _extras(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        text = self.masker.mask(text)
        if not self.journal:
            return text
        # journald splits on newlines; prefix each line so a traceback keeps its priority.
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One ECS-style JSON object per line, for log shippers."""

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__()
        self.masker = masker or _secrets
        self.hostname = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": _utc(record.created, millis=True),
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc[_ECS_NAMES.get(key, f"jobd.{key}")] = value
        doc["log.logger"] = record.name
        doc["process.pid"] = record.process
        doc["host.hostname"] = self.hostname
        if record.exc_info and record.exc_info[0] is not None:
            doc["error.type"] = record.exc_info[0].__name__
            doc["error.message"] = str(record.exc_info[1])
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        if record.stack_info:
            traces = [doc.get("error.stack_trace"), self.formatStack(record.stack_info)]
            doc["error.stack_trace"] = "\n".join(filter(None, traces))
        doc["ecs.version"] = ECS_VERSION
        # Mask values before encoding: a secret with a quote in it is escaped
        # in the JSON text and would slip past a mask applied afterwards.
        masked = {k: self._mask(v) for k, v in doc.items()}
        return json.dumps(masked, ensure_ascii=False, default=str)

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.masker.mask(value)
        if isinstance(value, bool | int | float):
            return value
        return self.masker.mask(str(value))


def _utc(created: float, millis: bool) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    if millis:
        stamp += f".{int(created * 1000) % 1000:03d}"
    return stamp + "Z"


def setup_logging(
    fmt: str = "human",
    level: str = "info",
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Logger:
    """Configure the `jobd` logger; calling it again (on reload) replaces the handler.

    The logger stops propagating to the root logger so a library that calls
    logging.basicConfig() cannot print every line twice.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (use one of: {', '.join(FORMATS)})")
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of: {', '.join(LEVELS)})")
    out = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = HumanFormatter(journal=journal_stream_active(out, env))
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("jobd")
    logger = logging.getLogger("jobd")
    for old in [h for h in logger.handlers if h.get_name() == "jobd"]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(name.upper())
    logger.propagate = False
    # Neither format shows the caller's file and line, nor thread or process
    # names: skipping their lookups halves the cost of a line (two per run).
    logging._srcfile = None  # type: ignore[attr-defined]  # documented in the logging HOWTO
    logging.logThreads = False
    logging.logMultiprocessing = False
    return logger
