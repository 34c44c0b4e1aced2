"""Fault: the store is not what jobd expects. A corrupt or truncated file, another
program's SQLite database, a store written by a newer jobd, a read-only store,
a directory that does not exist, a PostgreSQL server that is not there.

Every command that needs the store is tried on each: one line on stderr, exit
69 (2 only for a usage error), no traceback, and not a byte of the store
changed (files compared before and after, and no file added beside it).
tests/test_store.py shows the same refusals on open_store() alone.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Outcome, Status, Trigger
from tests.conftest import finish_run, jobd_cmd, open_store
from tests.faults import Daemon, jobd_main, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.fault]

CONFIG = '[jobs.backup]\nschedule = "0 3 * * *"\ncommand = ["true"]\n'
COMMANDS = [
    ["list"],
    ["list", "--json"],
    ["executions"],
    ["executions", "--json", "--job", "backup"],
    ["show", "1"],
    ["logs", "1"],
    ["status", "--json"],
    ["check"],
    ["audit"],
    ["next", "backup"],
    ["trigger", "backup"],
    ["trigger", "backup", "--local"],
    ["cancel", "1"],
    ["pause", "backup"],
    ["resume", "backup"],
    ["prune", "--keep", "1"],
    ["schedule", "extra", "* * * * *", "--", "true"],
    ["unschedule", "extra"],
]
# Commands that may answer from the config alone, for a job of the config.
NO_STORE = {"next"}
# The daemon, as a real process: it must refuse at once, not hang or retry forever.
DAEMON_COMMANDS = [["run", "--once"], ["run"]]


def real_store(path: Path) -> None:
    """A jobd store with a job and one finished run."""
    store = open_store(f"sqlite:///{path}")
    store.apply_config(parse_config(CONFIG), store.now())
    run_id = store.enqueue(NewRun("backup", Trigger.MANUAL, store.now()))
    store.claim_run(run_id, "i", "h")
    finish_run(store, run_id, "i", Outcome(Status.SUCCEEDED, 0))
    store.close()


def corrupt_random(d: Path) -> str:
    (d / "jobd.db").write_bytes(os.urandom(16384))
    return "sqlite"


def corrupt_text(d: Path) -> str:
    (d / "jobd.db").write_text("not a database\n" * 100)
    return "sqlite"


def corrupt_pages(d: Path) -> str:
    """A real store whose pages after the header were overwritten."""
    real_store(d / "jobd.db")
    data = bytearray((d / "jobd.db").read_bytes())
    data[100:] = os.urandom(len(data) - 100)
    (d / "jobd.db").write_bytes(bytes(data))
    return "sqlite"


def truncated(d: Path) -> str:
    real_store(d / "jobd.db")
    data = (d / "jobd.db").read_bytes()
    (d / "jobd.db").write_bytes(data[: len(data) // 3])
    return "sqlite"


def foreign(d: Path) -> str:
    with closing(sqlite3.connect(d / "jobd.db")) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'ada')")
    return "sqlite"


def newer(d: Path) -> str:
    real_store(d / "jobd.db")
    with closing(sqlite3.connect(d / "jobd.db")) as conn, conn:
        conn.execute("UPDATE jobd_schema SET version = 99")
    return "sqlite"


def missing_dir(d: Path) -> str:
    return "missing"


CASES: dict[str, Callable[[Path], str]] = {
    "random bytes": corrupt_random,
    "text file": corrupt_text,
    "damaged pages": corrupt_pages,
    "truncated": truncated,
    "foreign database": foreign,
    "newer schema": newer,
    "missing directory": missing_dir,
}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def check_refusal(code: int, out: str, err: str, error: BaseException | None) -> list[str]:
    problems = []
    if error is not None:
        problems.append(f"uncaught {type(error).__name__}: {error}")
    if code not in (2, 69):
        problems.append(f"exit {code}")
    if err.count("\n") != 1 or not err.startswith("jobd"):
        problems.append(f"stderr not one line: {err!r}")
    if "Traceback" in err + out:
        problems.append("traceback")
    return problems


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    config = write_config(tmp_path / "jobd.toml", CONFIG)
    return {"JOBD_CONFIG": str(config), "XDG_DATA_HOME": str(tmp_path / "data")}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_store_file_is_refused_in_one_line_and_left_alone(
    case: str, tmp_path: Path, environment: dict[str, str], reliability: Recorder
) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    kind = CASES[case](directory)
    path = directory / "jobd.db" if kind == "sqlite" else tmp_path / "no" / "such" / "jobd.db"
    env = {**environment, "JOBD_STORE": f"sqlite:///{path}"}
    before = snapshot(directory)
    failures: dict[str, list[str]] = {}
    for args in COMMANDS:
        result = jobd_main(args, env)
        if args[0] in NO_STORE and result[0] == 0 and result[3] is None:
            continue
        problems = check_refusal(*result)
        if result[0] == 2 and case != "missing directory":
            problems.append("usage error for a bad store")
        if problems:
            failures[" ".join(args)] = problems
        changed = snapshot(directory) != before
        if changed:
            failures.setdefault(" ".join(args), []).append("the store changed")
            break
    # `jobd run` creates a missing directory (tests/test_fault_store_outage.py).
    for args in DAEMON_COMMANDS if case != "missing directory" else []:
        done = subprocess.run(
            jobd_cmd(*args), env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        )
        problems = check_refusal(done.returncode, done.stdout, done.stderr, None)
        if problems:
            failures[" ".join(args)] = problems
    after = snapshot(directory)
    reliability.observe(
        "store-files",
        "sqlite",
        runs=len(COMMANDS) + len(DAEMON_COMMANDS),
        detail=f"{case}: {len(COMMANDS) + len(DAEMON_COMMANDS)} commands, "
        f"{len(failures)} not refused in one line with exit 69, store "
        + ("unchanged" if after == before else "CHANGED"),
    )
    assert not failures, failures
    assert after == before
    assert not (tmp_path / "no").exists()


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A real store on a file system mounted read-only: even root cannot write it
    (chmod 0400 or a read-only directory stop everyone but root, and the tests run
    as root)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(
        # mode: a tmpfs is 1777 by default, and root refuses a store others can write.
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        real_store(mount / "jobd.db")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "jobd.db"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_store_reads_or_refuses_and_never_half_writes(
    read_only_store: Path, environment: dict[str, str], reliability: Recorder
) -> None:
    env = {**environment, "JOBD_STORE": f"sqlite:///{read_only_store}"}
    before = snapshot(read_only_store.parent)
    failures: dict[str, Any] = {}
    for args in [*COMMANDS, *DAEMON_COMMANDS]:
        if args[0] == "run":
            done = subprocess.run(
                jobd_cmd(*args), env={**os.environ, **env}, capture_output=True, text=True
            )
            result: tuple = (done.returncode, done.stdout, done.stderr, None)
        else:
            result = jobd_main(args, env)
        code, _out, err, error = result
        # Reading a read-only store may work; anything else is refused in one line.
        if code == 0 and not err.strip() and error is None:
            continue
        if problems := check_refusal(*result):
            failures[" ".join(args)] = problems
    reliability.observe(
        "store-files",
        "sqlite",
        runs=len(COMMANDS) + len(DAEMON_COMMANDS),
        detail=f"read-only file system: {len(failures)} commands not refused in one line",
    )
    assert not failures, failures
    assert snapshot(read_only_store.parent) == before


def test_a_newer_postgresql_store_is_refused_and_left_alone(
    postgres_url: str, postgres_admin: Any, environment: dict[str, str], reliability: Recorder
) -> None:
    store = open_store(postgres_url)
    store.apply_config(parse_config(CONFIG), store.now())
    store.m.Schema.update(version=99).execute()
    store.close()
    schema = postgres_url.rsplit("%3D", 1)[1]

    def dump() -> dict[str, list]:
        with postgres_admin.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
            tables = sorted(row[0] for row in cur.fetchall())
            found = {}
            for table in tables:
                cur.execute(f"SELECT * FROM {schema}.{table}")
                found[table] = sorted(map(repr, cur.fetchall()))
            return found

    before = dump()
    env = {**environment, "JOBD_STORE": postgres_url}
    failures = {}
    for args in COMMANDS:
        result = jobd_main(args, env)
        if args[0] in NO_STORE and result[0] == 0 and result[3] is None:
            continue
        if problems := check_refusal(*result):
            failures[" ".join(args)] = problems
    done = subprocess.run(
        jobd_cmd("run"), env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    if problems := check_refusal(done.returncode, done.stdout, done.stderr, None):
        failures["run"] = problems
    reliability.observe(
        "store-files",
        "postgresql",
        runs=len(COMMANDS) + 1,
        detail=f"newer schema: {len(failures)} commands not refused in one line, store "
        + ("unchanged" if dump() == before else "CHANGED"),
    )
    assert not failures, failures
    assert dump() == before


def test_an_unreachable_postgresql_is_one_line_and_exit_69(
    environment: dict[str, str], reliability: Recorder
) -> None:
    url = "postgresql://jobd:s3cret-pw@127.0.0.1:1/jobd"
    env = {**environment, "JOBD_STORE": url}
    failures = {}
    for args in COMMANDS:
        code, out, err, error = jobd_main(args, env)
        if args[0] in NO_STORE and code == 0 and error is None:
            continue
        problems = check_refusal(code, out, err, error)
        if "s3cret-pw" in out + err:
            problems.append("password shown")
        if problems:
            failures[" ".join(args)] = problems
    reliability.observe(
        "store-files",
        "postgresql",
        runs=len(COMMANDS),
        detail=f"server not listening: {len(failures)} commands not refused in one line",
    )
    assert not failures, failures


@pytest.mark.slow
def test_a_store_deep_in_the_file_system_still_wakes_its_daemon(
    tmp_path: Path, reliability: Recorder
) -> None:
    """A wake socket beside a store this deep has a path longer than AF_UNIX takes
    (108 bytes): the daemon used to die at start with a traceback."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    config = write_config(tmp_path / "jobd.toml", '[jobs.now]\ncommand = ["true"]\n')
    daemon = Daemon(config, f"sqlite:///{deep / 'jobd.db'}", tmp_path / "jobd.log")
    try:
        daemon.start()
        started = time.monotonic()
        done = subprocess.run(
            jobd_cmd("trigger", "now", "--wait"), env=daemon.env, capture_output=True, text=True
        )
        took = time.monotonic() - started
        assert daemon.stop() == 0
        reliability.observe(
            "store-files",
            "sqlite",
            runs=1,
            detail=f"store path of {len(str(deep / 'jobd.db'))} bytes: daemon up, "
            f"a trigger ran in {took:.1f}s",
        )
        assert done.returncode == 0, done.stderr
        assert took < 10  # woken by the socket, not by the 60 s idle poll
        assert "cannot open the wake-up socket" not in daemon.full_log()
    finally:
        daemon.cleanup()
