"""Log formats (human, journald, ECS JSON) and secret masking, on real handlers."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.system import log as jlog
from jobd.system.log import add_secrets, add_store_url, mask_secrets, setup_logging

HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) ")


@pytest.fixture(autouse=True)
def pristine_logger() -> Iterator[None]:
    """setup_logging changes a process-wide logger; give it back as it was."""
    logger = logging.getLogger("jobd")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    jlog.clear_secrets()
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    jlog.clear_secrets()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_human_lines_have_utc_timestamp_level_message_and_context() -> None:
    out = io.StringIO()
    logger = setup_logging("human", "info", stream=out, environ={})
    logger.info("run started", extra={"action": "run.start", "job": "backup", "execution_id": 7})
    logging.getLogger("jobd.daemon.loop").warning(
        "store down", extra={"error": "connection refused"}
    )
    logger.debug("hidden at info")
    first, second = lines(out)
    assert HUMAN_LINE.match(first)
    assert first.split(" ", 1)[1] == "INFO run started action=run.start job=backup execution_id=7"
    assert second.endswith('WARNING store down error="connection refused"')


def test_journal_stream_drops_timestamps_and_prefixes_priorities() -> None:
    out = io.StringIO()
    logger = setup_logging("human", "debug", stream=out, environ={"JOURNAL_STREAM": "8:12345"})
    logger.debug("d")
    logger.info("i", extra={"job": "backup"})
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    assert lines(out) == [
        "<7>DEBUG d",
        "<6>INFO i job=backup",
        "<4>WARNING w",
        "<3>ERROR e",
        "<2>CRITICAL c",
    ]


def test_journal_traceback_lines_keep_the_error_priority() -> None:
    out = io.StringIO()
    logger = setup_logging(stream=out, environ={"JOURNAL_STREAM": "8:12345"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("tick failed")
    got = lines(out)
    assert got[0] == "<3>ERROR tick failed"
    assert len(got) > 2 and all(line.startswith("<3>") for line in got)
    assert got[-1] == "<3>RuntimeError: boom"


def test_journal_stream_of_another_descriptor_is_ignored(tmp_path: Path) -> None:
    """A job's shell inherits JOURNAL_STREAM but writes elsewhere: keep timestamps."""
    with open(tmp_path / "a.log", "w") as stream:
        info = os.fstat(stream.fileno())
        assert jlog.journal_stream_active(
            stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        )
        assert not jlog.journal_stream_active(
            stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"}
        )
        assert not jlog.journal_stream_active(stream, {"JOURNAL_STREAM": "garbage"})
        assert not jlog.journal_stream_active(stream, {})
        logger = setup_logging(stream=stream, environ={"JOURNAL_STREAM": "1:2"})
        logger.info("plain")
    assert HUMAN_LINE.match((tmp_path / "a.log").read_text())


def test_json_lines_are_ecs_objects() -> None:
    out = io.StringIO()
    logger = setup_logging("json", "info", stream=out, environ={"JOURNAL_STREAM": "8:1"})
    logger.info(
        "run finished",
        extra={
            "action": "run.finish",
            "job": "backup",
            "execution_id": 42,
            "instance": "host-a:123",
            "status": "succeeded",
        },
    )
    logging.getLogger("jobd.store").warning("plain")
    first, second = (json.loads(line) for line in lines(out))
    assert list(first)[:3] == ["@timestamp", "log.level", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["@timestamp"])
    assert first["log.level"] == "info"
    assert first["message"] == "run finished"
    assert first["event.action"] == "run.finish"
    assert first["jobd.job"] == "backup"
    assert first["jobd.execution_id"] == 42
    assert first["jobd.instance"] == "host-a:123"
    assert first["jobd.status"] == "succeeded"
    assert first["process.pid"] == os.getpid()
    assert first["host.hostname"] == socket.gethostname()
    assert first["ecs.version"] == jlog.ECS_VERSION
    assert first["log.logger"] == "jobd"
    assert second["log.level"] == "warning" and second["log.logger"] == "jobd.store"
    assert "jobd.job" not in second and "event.action" not in second


def test_json_exception_fields() -> None:
    out = io.StringIO()
    logger = setup_logging("json", stream=out, environ={})
    try:
        raise ValueError("bad row")
    except ValueError:
        logger.exception("claim failed", extra={"action": "claim"})
    (doc,) = (json.loads(line) for line in lines(out))
    assert doc["error.type"] == "ValueError"
    assert doc["error.message"] == "bad row"
    assert "Traceback" in doc["error.stack_trace"]


def test_registered_secrets_are_masked_in_every_format() -> None:
    add_secrets(["hunter2-token", 'quote"d-secret', "ab"])  # "ab" is too short to mask
    for fmt, environ in (("human", {}), ("human", {"JOURNAL_STREAM": "1:1"}), ("json", {})):
        out = io.StringIO()
        logger = setup_logging(fmt, stream=out, environ=environ)
        logger.info("env TOKEN=hunter2-token", extra={"job": "ab", "detail": 'x quote"d-secret'})
        try:
            raise RuntimeError("failed with hunter2-token")
        except RuntimeError:
            logger.exception("oops")
        text = out.getvalue()
        assert "hunter2" not in text and "quote" not in text, (fmt, text)
        assert "***" in text
        if fmt == "json":
            for line in lines(out):
                json.loads(line)


def test_store_url_password_is_masked_raw_and_decoded() -> None:
    add_store_url("postgresql://jobd:p%40ss-w0rd@db.internal:5432/jobd?sslmode=require")
    add_store_url("postgresql://db.internal/jobd?user=jobd&password=qs-s3cret")
    out = io.StringIO()
    logger = setup_logging(stream=out, environ={})
    logger.error("auth failed for p@ss-w0rd and p%40ss-w0rd; also qs-s3cret")
    text = out.getvalue()
    assert "ss-w0rd" not in text and "s3cret" not in text
    assert text.count("***") == 3


def test_url_credentials_are_masked_even_when_not_registered() -> None:
    assert (
        mask_secrets("store postgresql://jobd:letmein@db/jobd is down")
        == "store postgresql://jobd:***@db/jobd is down"
    )
    assert mask_secrets("dsn host=db password=letmein user=jobd") == (
        "dsn host=db password=*** user=jobd"
    )
    assert mask_secrets("sqlite:////var/lib/jobd/jobd.db at 12:30") == (
        "sqlite:////var/lib/jobd/jobd.db at 12:30"
    )


def test_longer_secret_wins_over_its_prefix() -> None:
    add_secrets(["abcd", "abcdefgh"])
    assert mask_secrets("x abcdefgh y abcd") == "x *** y ***"


def test_setup_is_idempotent_and_does_not_propagate() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(stream=first, environ={})
    logger = setup_logging(stream=second, environ={})
    logger.info("once")
    assert first.getvalue() == "" and len(lines(second)) == 1
    assert [h.get_name() for h in logger.handlers].count("jobd") == 1
    assert logger.propagate is False


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("human", "loud")])
def test_unknown_format_or_level_is_refused(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        setup_logging(fmt, level, stream=io.StringIO(), environ={})


def test_level_names_are_case_insensitive() -> None:
    assert setup_logging("human", "DEBUG", stream=io.StringIO(), environ={}).level == logging.DEBUG
