"""Run one function in a short-lived forked child and return its result.

A long-lived process that does one memory-hungry step at start-up (parsing and
applying a 10,000-job config) keeps the high-water mark of that step for its
whole life: CPython's allocator rarely hands freed memory back to the system.
Doing the step in a child that exits leaves the parent's heap as if it never
happened. Only call this while the process has one thread: fork() copies no
other thread, and a lock another thread held stays held in the child.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

from jobd.errors import JobdError

T = TypeVar("T")


def call_in_child(func: Callable[[], T], started: Callable[[int], None] | None = None) -> T:
    """func() in a forked child: its return value, or its exception raised here.

    `started(pid)` is told the child's pid (to pass a signal on to it). Where
    fork() does not exist, func() runs in this process.
    """
    if not hasattr(os, "fork"):
        return func()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(func, write_end)
    os.close(write_end)
    if started is not None:
        started(pid)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if not payload:
        raise JobdError(f"start-up step ended without a result ({_describe(status)})")
    ok, value = pickle.loads(payload)
    if ok:
        return value
    raise value


def _child(func: Callable[[], object], write_end: int) -> None:
    code = 0
    try:
        try:
            payload = pickle.dumps((True, func()))
        except Exception as exc:  # handed to the parent, which raises it
            payload = _pickled_error(exc)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
    except BaseException:  # Ctrl-C, or a broken pipe: the parent reports it
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)  # no atexit handlers, no finalisers: they belong to the parent


def _pickled_error(exc: Exception) -> bytes:
    try:
        payload = pickle.dumps((False, exc))
        pickle.loads(payload)  # an exception whose __init__ takes other arguments fails here
        return payload
    except Exception:
        return pickle.dumps((False, JobdError(f"{type(exc).__name__}: {exc}")))


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
