"""jobd.system.forkcall: a start-up step in a real forked child."""

from __future__ import annotations

import os
import signal

import pytest

from jobd.errors import ConfigError, JobdError
from jobd.system.forkcall import call_in_child


def test_the_result_comes_back_and_the_work_stays_in_the_child() -> None:
    grown: list[int] = []

    def work() -> tuple[int, int]:
        grown.extend(range(1000))
        return os.getpid(), len(grown)

    child_pid, size = call_in_child(work)
    assert child_pid != os.getpid()
    assert size == 1000
    assert grown == []  # the child's memory, not ours


def test_a_config_error_is_raised_here_with_its_location() -> None:
    def work() -> None:
        raise ConfigError("expected a string", file="/etc/jobd.toml", job="backup", key="command")

    with pytest.raises(ConfigError) as caught:
        call_in_child(work)
    assert str(caught.value) == "/etc/jobd.toml: job 'backup': key 'command': expected a string"
    assert (caught.value.file, caught.value.job, caught.value.key) == (
        "/etc/jobd.toml",
        "backup",
        "command",
    )


def test_an_exception_that_cannot_be_pickled_keeps_its_message() -> None:
    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}/{b}")

    def work() -> None:
        raise Odd(1, 2)

    with pytest.raises(JobdError, match="Odd: 1/2"):
        call_in_child(work)


def test_a_child_killed_by_a_signal_is_reported() -> None:
    def work() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(JobdError, match=f"killed by signal {int(signal.SIGKILL)}"):
        call_in_child(work)
