"""What the CLI tests share: an exact JSON shape checker, a stand-in executing
instance that works through the real store API, and helpers to run `jobd`."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import finish_run, run_jobd, wait_for, write_output

ANSI = re.compile(r"\x1b\[")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
def postgresql_url(postgres_url: str) -> str:
    """conftest's `store_url` asks for `<backend>_url`, and the backend is named
    "postgresql" while the fixture is `postgres_url`; import this alias into a
    test module to get the PostgreSQL cases."""
    return postgres_url


# -- JSON shapes ---------------------------------------------------------------


class Time:
    """An RFC 3339 UTC instant in text."""


class Null:
    """JSON null."""


class MapOf:
    """An object with any string keys, each value of `shape`."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape


def nullable(*kinds: Any) -> tuple[Any, ...]:
    return (*kinds, Null)


def check_shape(value: Any, shape: Any, where: str = "$") -> None:
    """Assert `value` has exactly `shape`: dicts with the same keys, lists of one
    shape, and leaves of a type, Time, Null, or a tuple of alternatives."""
    if isinstance(shape, tuple):
        errors = []
        for option in shape:
            try:
                check_shape(value, option, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: {value!r} matches none of {shape}: {errors}")
    if isinstance(shape, MapOf):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        for key, item in value.items():
            check_shape(item, shape.shape, f"{where}.{key}")
        return
    if isinstance(shape, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        assert set(value) == set(shape), (
            f"{where}: keys differ: extra {sorted(set(value) - set(shape))}, "
            f"missing {sorted(set(shape) - set(value))}"
        )
        for key, sub in shape.items():
            check_shape(value[key], sub, f"{where}.{key}")
        return
    if isinstance(shape, list):
        assert isinstance(value, list), f"{where}: expected an array, got {value!r}"
        for index, item in enumerate(value):
            check_shape(item, shape[0], f"{where}[{index}]")
        return
    if shape is Null:
        assert value is None, f"{where}: expected null, got {value!r}"
    elif shape is Time:
        assert isinstance(value, str) and RFC3339.match(value), f"{where}: not RFC 3339: {value!r}"
    elif shape is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}: {value!r}"
    elif shape is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    else:
        assert isinstance(value, shape), f"{where}: expected {shape.__name__}, got {value!r}"


RUN_SHAPE = {
    "id": int,
    "job": str,
    "trigger": str,
    "scheduled_for": nullable(Time),
    "queued_at": Time,
    "started_at": nullable(Time),
    "finished_at": nullable(Time),
    "duration_s": nullable(float),
    "status": str,
    "exit_code": nullable(int),
    "signal": nullable(int),
    "attempt": int,
    "error": nullable(str),
    "instance": nullable(str),
    "host": nullable(str),
    "pid": nullable(int),
    "triggered_by": nullable(str),
}
SHOW_SHAPE = {
    **RUN_SHAPE,
    "not_before": Time,
    "retry_of": nullable(int),
    "config_hash": nullable(str),
    "cancel_requested": bool,
    "epoch": nullable(int),
    "log_bytes": int,
    "log": str,
}

# -- the store -----------------------------------------------------------------


def add_job(store: Any, name: str, schedule: str | None = "*/5 * * * *", **raw: Any) -> None:
    """A store-only job, as `jobd schedule` makes it."""
    from jobd.core.config.parse import parse_job
    from jobd.core.model import Source

    table = {"command": ["true"], **raw}
    if schedule is not None:
        table["schedule"] = schedule
    spec = parse_job(name, table, "test", {}, source=Source.CLI)
    store.upsert_cli_job(spec, store.now())


def add_instance(
    store: Any, instance_id: str | None = None, heartbeat: datetime | None = None
) -> str:
    """An instance row as a daemon writes it; live while its heartbeat is fresh."""
    instance_id = instance_id or f"test-{uuid.uuid4().hex[:8]}"
    now = store.now()
    store.m.Instance.insert(
        id=instance_id,
        host=socket.gethostname(),
        pid=4242,
        version="test",
        started_at=(heartbeat or now).replace(tzinfo=None),
        heartbeat_at=(heartbeat or now).replace(tzinfo=None),
        role="leader",
        running=0,
    ).execute()
    return instance_id


@dataclass
class Step:
    """What the stand-in instance does with the run it claims."""

    output: Sequence[str] = ()  # chunks written one after the other
    status: str = "succeeded"
    exit_code: int | None = 0
    error: str | None = None
    hold: Callable[[], bool] | None = None  # keep running until this returns True


@dataclass
class Executor:
    """Plays a daemon's executing instance, in a thread, through the real store API:
    it heartbeats, claims the next queued run, writes its output, and finishes it."""

    url: str
    step: Step = field(default_factory=Step)
    instance_id: str = field(default_factory=lambda: f"exec-{uuid.uuid4().hex[:8]}")
    claimed: list[int] = field(default_factory=list)
    error: BaseException | None = None

    def __enter__(self) -> Executor:
        from tests.conftest import open_store

        self.store = open_store(self.url)
        add_instance(self.store, self.instance_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.store.close()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        from jobd.core.model import Outcome, Status
        from jobd.core.timeutil import to_db

        try:
            store, Instance = self.store, self.store.m.Instance
            while not self._stop.is_set():
                Instance.update(heartbeat_at=to_db(store.now())).where(
                    Instance.id == self.instance_id
                ).execute()
                claimed = store.claim(self.instance_id, socket.gethostname(), 1)
                if not claimed:
                    time.sleep(0.02)
                    continue
                run, _spec = claimed[0]
                self.claimed.append(run.id)
                store.record_progress({run.id: 4242}, {}, [])
                text = ""
                for chunk in self.step.output:
                    text += chunk
                    write_output(store, run.id, text, len(text.encode()))
                    time.sleep(0.05)
                while self.step.hold is not None and not self.step.hold():
                    if run.id in store.runs_to_stop(self.instance_id, [run.id]):
                        finish_run(store, run.id, self.instance_id, Outcome(Status.CANCELLED))
                        break
                    time.sleep(0.02)
                else:
                    outcome = Outcome(
                        Status(self.step.status), self.step.exit_code, None, self.step.error
                    )
                    finish_run(store, run.id, self.instance_id, outcome)
        except BaseException as exc:  # surfaced by __exit__
            self.error = exc


# -- running jobd ----------------------------------------------------------------


def empty_config(tmp_path: Path) -> str:
    path = tmp_path / "jobd.toml"
    if not path.exists():
        path.write_text("")
    return str(path)


def jobd(url: str, tmp_path: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """`jobd --store URL ARGS` as a real process, isolated from any user config and data."""
    env = {
        "JOBD_CONFIG": empty_config(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),  # never the default store of whoever runs tests
        **kwargs.pop("env", {}),
    }
    return run_jobd("--store", url, *args, env=env, **kwargs)


def invoke(url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """`jobd ARGS` in this process through click's runner (output is not a terminal)."""
    from click.testing import CliRunner

    from jobd.cli import cli

    runner = CliRunner()
    return runner.invoke(cli, ["--store", url, *args], env={"JOBD_CONFIG": "", **(env or {})})


def now() -> datetime:
    return datetime.now(UTC)


__all__ = ["ANSI", "wait_for"]
