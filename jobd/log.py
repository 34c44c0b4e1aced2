"""Logging setup for the daemon (human lines with a time stamp)."""

from __future__ import annotations

import logging
import sys
from typing import IO


class _Human(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        return f"{stamp}Z {record.levelname} {record.getMessage()}"


def setup_logging(fmt: str = "human", level: str = "info", stream: IO[str] | None = None) -> None:
    import time

    logger = logging.getLogger("jobd")
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = _Human()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
