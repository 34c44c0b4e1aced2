"""Waiting for a run to end, and streaming its output as the store receives it.

How the output is followed: the daemon keeps only the tail of a run's output
in the `log` column (the last `log_lines` lines, bounded in bytes) and counts
every byte it has seen in `log_bytes`; it writes both together, in batches.
A follower remembers the tail and the count it has printed. When the count
grows by N, the new output is the last N bytes of the new tail, provided the
rest of the new tail continues what was printed (one of the two is a suffix
of the other). When the count grew by more than the whole tail, output was
dropped between two polls: a note on stderr says how many bytes, then the tail
is printed. When the bytes do not line up (output the daemon rewrote, such as
masked secrets), the follower falls back to the longest overlap between the
old tail's end and the new tail's start.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from jobd.cli import render
from jobd.errors import ExitCode, NotFound
from jobd.ops.shapes import new_output  # shared with the HTTP API and the client

FINAL = frozenset(("succeeded", "failed", "timed_out", "cancelled", "abandoned", "skipped"))


@dataclass
class Follower:
    tail: str = ""
    total: int = 0

    def feed(self, tail: str, total: int) -> None:
        text, lost = new_output(self.tail, self.total, tail, total)
        self.tail, self.total = tail, total
        if lost:
            click.echo(f"jobd: [{lost} bytes of output not kept]", err=True)
        if text:
            click.echo(text, nl=False)


def outcome(state: dict[str, Any]) -> tuple[ExitCode, str]:
    """The exit code a waiting command ends with, and the line that explains it."""
    status = state["status"]
    name = f"run {state['id']} ({state['job']})"
    took = f" after {render.duration(state['duration_s'])}" if state["duration_s"] else ""
    error = f": {state['error']}" if state.get("error") else ""
    if status == "succeeded":
        return ExitCode.OK, f"{name} succeeded in {render.duration(state['duration_s'] or 0)}"
    if status == "failed":
        if state["exit_code"] is not None:
            return ExitCode.FAILURE, f"{name} failed with exit code {state['exit_code']}{took}"
        if state["signal"] is not None:
            return ExitCode.FAILURE, f"{name} failed: killed by signal {state['signal']}{took}"
        return ExitCode.FAILURE, f"{name} failed{took}{error}"
    if status == "timed_out":
        return ExitCode.TIMEOUT, f"{name} timed out{took}"
    what = {
        "cancelled": "was cancelled",
        "abandoned": "was abandoned: its instance vanished",
        "skipped": "was skipped by the job's overlap policy",
    }[status]
    return ExitCode.FAILURE, f"{name} {what}{error}"


def await_run(
    reader: Any,
    run_id: int,
    *,
    follow: bool,
    on_tick: Callable[[dict[str, Any]], None] = lambda state: None,
) -> dict[str, Any]:
    """Poll the store until the run is final; print its new output when following.

    On SQLite the change counter is checked every 20 ms and the row read only
    when it moved (or once a second); on PostgreSQL the row is read every 50 ms,
    one primary-key lookup.
    """
    check = 0.02 if reader.backend == "sqlite" else 0.05
    follower = Follower()
    state = _state(reader, run_id)
    read_at = time.monotonic()
    while True:
        on_tick(state)
        if follow and (state["log_bytes"] != follower.total or state["status"] in FINAL):
            follower.feed(*reader.log(run_id))
        if state["status"] in FINAL:
            return state
        time.sleep(check)
        if reader.changed() or time.monotonic() - read_at >= 1.0:
            state = _state(reader, run_id)
            read_at = time.monotonic()


def _state(reader: Any, run_id: int) -> dict[str, Any]:
    state = reader.run_state(run_id)
    if state is None:
        raise NotFound(f"run {run_id} no longer exists (pruned?)")
    return state


def finish(state: dict[str, Any], quiet: bool = False) -> None:
    """Say how the run ended and exit with its code (SPEC section 5)."""
    code, message = outcome(state)
    if not quiet:
        click.echo(message, err=True)
    raise click.exceptions.Exit(int(code))


def interruptible() -> None:
    """Let Ctrl-C stop the waiting even when this process started with SIGINT
    ignored, as a non-interactive shell starts its background jobs: a person
    who waits on a run expects Ctrl-C to end the wait (the run goes on)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def waiting(
    job: str, run_id: int, spinner: bool = True
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A spinner with the job, its status and the time waited, on a terminal only
    (and not while output streams: the output shows the progress then).

    Ctrl-C stops the waiting, not the run: exit 130 and say so.
    """
    started = time.monotonic()
    status = None
    person = render.interactive(err=True)
    if spinner and person:
        from rich.console import Console

        status = Console(stderr=True).status(f"{job}: queued")
        status.start()
    noted = not person

    def tick(state: dict[str, Any]) -> None:
        nonlocal noted
        if status is not None:
            elapsed = render.duration(time.monotonic() - started)
            status.update(f"{job} (run {run_id}): {state['status']}, {elapsed}")
        elif not noted and state["status"] == "queued":
            # Following shows no spinner; say why nothing appears yet.
            click.echo(f"jobd: run {run_id} is queued; waiting for a daemon to start it", err=True)
            noted = True

    try:
        yield tick
    except KeyboardInterrupt:
        if status is not None:
            status.stop()
            status = None
        interrupted(run_id)
    finally:
        if status is not None:
            status.stop()


def interrupted(run_id: int) -> NoReturn:
    """Ctrl-C while waiting: the run is in the store and goes on; exit 130."""
    click.echo(
        f"\njobd: stopped waiting; run {run_id} goes on (jobd logs {run_id} --follow)", err=True
    )
    raise click.exceptions.Exit(int(ExitCode.INTERRUPTED)) from None
