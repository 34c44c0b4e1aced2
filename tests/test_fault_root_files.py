"""Fault: someone who is not root prepares the SQLite store's files for a root daemon.

The tests run as root. A root daemon whose store sits where others can write
must not follow a symlink planted there, must not use a store file, a -wal or a
companion another user owns or could write, and must say so in one line (exit
2, naming the path and the reason), leaving every file as it found it. The
companions (leader lock, wake sockets, liveness locks) live in a private 0700
directory beside the store, `<store>.d/`.

Also here: a store deleted or replaced under a running daemon stops it (a
daemon writing into an unlinked file loses everything it writes), and commands
that only read never create a store where one vanished.

tests/test_fault_security.py checks the config file's ownership the same way.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.conftest import jobd_cmd, open_store, wait_for
from tests.faults import Daemon, jobd_main, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.fault]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the ownership checks are root's")

NOBODY = pwd.getpwnam("nobody")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]
CONFIG = '[jobs.backup]\nschedule = "30 2 * * *"\ncommand = ["true"]\n'


def one_line_refusal(code: int, err: str, path: Path) -> bool:
    return code == 2 and err.count("\n") == 1 and "refused" in err and str(path) in err


def start_refused(tmp_path: Path, url: str) -> tuple[int, str]:
    """`jobd run` on `url`: its exit code and what it printed."""
    config = write_config(tmp_path / "jobd.toml", CONFIG)
    daemon = Daemon(config, url, tmp_path / "jobd.log")
    try:
        daemon.start(ready=False)
        assert daemon.proc is not None
        code = daemon.proc.wait(timeout=30)
    finally:
        daemon.cleanup()
    return code, daemon.full_log()


def shared_dir(tmp_path: Path) -> Path:
    """A sticky, world-writable directory, as /tmp is."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


# -- planted symlinks ----------------------------------------------------------------


@as_root
def test_a_symlink_planted_as_the_leader_lock_in_a_shared_dir_is_never_followed(
    tmp_path: Path, reliability: Recorder
) -> None:
    """The finding: `jobd.db.leader -> /some/root-owned-file` in a world-writable
    directory, and the root daemon overwrote the file with its pid."""
    shared = shared_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (shared / "jobd.db.leader").symlink_to(victim)
    os.lchown(shared / "jobd.db.leader", NOBODY.pw_uid, NOBODY.pw_gid)
    code, log = start_refused(tmp_path, f"sqlite:///{shared / 'jobd.db'}")
    reliability.observe(
        "root-files", "sqlite", runs=1, detail=f"planted leader symlink: exit {code}"
    )
    assert victim.read_text() == "precious\n"
    assert one_line_refusal(code, log, shared), log
    assert "writable by" in log
    assert not (shared / "jobd.db").exists()


@as_root
@pytest.mark.parametrize("planted", ["jobd.db.d", "jobd.db.d/leader", "jobd.db-wal"])
def test_a_planted_symlink_beside_a_store_is_refused_and_its_target_untouched(
    planted: str, tmp_path: Path, reliability: Recorder
) -> None:
    """Even in a directory only root can write (the link came from an earlier
    compromise, a restore, a careless admin): jobd follows no link it did not make."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    if planted == "jobd.db.d":
        victim.mkdir()
    else:
        victim.write_text("precious\n")
    before = sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()
    if "/" in planted:
        (data / "jobd.db.d").mkdir(mode=0o700)
    (data / planted).symlink_to(victim)
    code, log = start_refused(tmp_path, f"sqlite:///{data / 'jobd.db'}")
    after = sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()
    reliability.observe("root-files", "sqlite", runs=1, detail=f"symlink {planted}: exit {code}")
    assert after == before
    assert one_line_refusal(code, log, data / planted), log
    assert "symbolic link" in log


# -- files others own or may write ----------------------------------------------------


@as_root
@pytest.mark.parametrize(
    "how", ["nobody's 0666 store", "nobody's 0600 store", "world-writable store", "nobody's -wal"]
)
def test_a_store_file_another_user_could_have_written_is_refused(
    how: str, tmp_path: Path, reliability: Recorder
) -> None:
    """The finding: a pre-created 0666 `jobd.db` owned by nobody became the store,
    so anyone could define jobs that root then ran."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    db = data / "jobd.db"
    open_store(f"sqlite:///{db}").close()
    target = db
    if "-wal" in how:
        target = data / "jobd.db-wal"
        target.write_bytes(b"")
    if "nobody" in how:
        os.chown(target, NOBODY.pw_uid, NOBODY.pw_gid)
    target.chmod(0o600 if "0600" in how else 0o666)
    before = db.read_bytes()
    url = f"sqlite:///{db}"
    code, log = start_refused(tmp_path, url)
    cli = jobd_main(["list"], {"JOBD_STORE": url, "JOBD_CONFIG": str(tmp_path / "jobd.toml")})
    reliability.observe("root-files", "sqlite", runs=2, detail=f"{how}: exit {code}, {cli[0]}")
    assert one_line_refusal(code, log, target), log
    assert "owned by a user other than root" in log or "writable by group or others" in log
    assert one_line_refusal(cli[0], cli[2], target), cli
    assert db.read_bytes() == before


@as_root
@pytest.mark.parametrize("how", ["sticky and world-writable", "group-writable", "nobody's"])
def test_a_store_directory_others_can_write_is_refused(
    how: str, tmp_path: Path, reliability: Recorder
) -> None:
    """Whoever can write the directory can plant a -wal that SQLite would replay
    into the store, or swap the store for their own: the sticky bit stops neither."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod({"sticky and world-writable": 0o1777, "group-writable": 0o775}.get(how, 0o755))
    if "nobody" in how:
        os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
    code, log = start_refused(tmp_path, f"sqlite:///{data / 'jobd.db'}")
    reliability.observe("root-files", "sqlite", runs=1, detail=f"store dir {how}: exit {code}")
    assert one_line_refusal(code, log, data), log
    assert list(data.iterdir()) == []


@as_root
def test_another_user_keeps_a_store_where_they_like(tmp_path: Path, reliability: Recorder) -> None:
    """Only root is strict: nobody's own store in a shared, sticky directory works
    as before (nobody's jobs run as nobody; there is no one to take over)."""
    shared = Path(tempfile.mkdtemp(prefix="jobd-shared-"))
    shared.chmod(0o1777)
    try:
        env = {**os.environ, "JOBD_STORE": f"sqlite:///{shared / 'jobd.db'}", "HOME": str(shared)}
        env.pop("JOBD_CONFIG", None)
        made = subprocess.run(
            [*AS_NOBODY, *jobd_cmd("schedule", "mine", "@daily", "--", "true")],
            capture_output=True,
            text=True,
            env=env,
            cwd=shared,
            timeout=60,
        )
        listed = subprocess.run(
            [*AS_NOBODY, *jobd_cmd("list")], capture_output=True, text=True, env=env, cwd=shared
        )
        reliability.observe(
            "root-files",
            "sqlite",
            runs=2,
            detail=f"nobody's store in a sticky dir: exit {made.returncode}",
        )
        assert made.returncode == 0, made.stderr
        assert listed.returncode == 0 and "mine" in listed.stdout, listed.stderr
        assert (shared / "jobd.db").stat().st_uid == NOBODY.pw_uid
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@as_root
def test_companions_of_an_older_jobd_are_left_alone_and_still_woken(
    tmp_path: Path, reliability: Recorder
) -> None:
    """An upgrade: the old daemon, not restarted yet, listens in jobd.db.wake/ and
    holds jobd.db.leader; the new jobd never writes them, says once that they are
    unused, and still pokes the old daemon's socket when a run is queued."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    db = data / "jobd.db"
    url = f"sqlite:///{db}"
    (data / "jobd.db.leader").write_text("4242\n")
    (data / "jobd.db.leader").chmod(0o600)
    (data / "jobd.db.instances").mkdir(mode=0o700)
    (data / "jobd.db.wake").mkdir(mode=0o700)
    old_daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old_daemon.bind(str(data / "jobd.db.wake" / "4242-old.sock"))
    old_daemon.settimeout(10)
    config = write_config(tmp_path / "jobd.toml", '[jobs.a]\ncommand = ["true"]\n')
    daemon = Daemon(config, url, tmp_path / "jobd.log")
    try:
        daemon.start()
        with closing(open_store(url)) as store:
            store.enqueue(NewRun("a", Trigger.MANUAL, store.now()))
        poked = old_daemon.recv(8)
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
        old_daemon.close()
    log = daemon.full_log()
    reliability.observe("root-files", "sqlite", runs=1, detail="older companions left alone")
    assert poked == b"w"
    assert (data / "jobd.db.leader").read_text() == "4242\n"
    assert list((data / "jobd.db.instances").iterdir()) == []
    assert log.count("are no longer used") == 1 and "jobd.db.leader" in log


# -- a store that vanishes -------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_deleted_under_a_running_daemon_stops_it(
    how: str, tmp_path: Path, reliability: Recorder
) -> None:
    """The finding: the daemon ran jobs into the unlinked file, the CLI made a fresh
    empty store beside it, and 15 runs of history were gone when it stopped."""
    done, holding = tmp_path / "done", tmp_path / "holding"
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nlease_ttl = "3s"\nkill_grace = "1s"\n'
        f'[jobs.tick]\nschedule = "@every 1s"\nshell = "echo . >> {done}"\n'
        f'[jobs.hold]\nschedule = "@every 1s"\nshell = "touch {holding}; exec sleep 300"\n',
    )
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    db = data / "jobd.db"
    url = f"sqlite:///{db}"
    daemon = Daemon(config, url, tmp_path / "jobd.log")
    try:
        daemon.start()
        wait_for(lambda: done.exists() and holding.exists(), timeout=20)
        if how == "deleted":
            for name in ("jobd.db", "jobd.db-wal", "jobd.db-shm"):
                (data / name).unlink(missing_ok=True)
        else:
            fresh = data / "fresh.db"
            with closing(sqlite3.connect(fresh)) as conn:
                conn.execute("CREATE TABLE t (x)")
            fresh.rename(db)
        # Within a heartbeat (lease_ttl / 3), with room for a loaded machine.
        wait_for(lambda: daemon.proc.poll() is not None, timeout=15)
        code = daemon.proc.returncode
        orphans = daemon.orphans()
    finally:
        daemon.cleanup()
    log = daemon.full_log()
    env = {"JOBD_STORE": url, "JOBD_CONFIG": str(tmp_path / "jobd.toml")}
    read = jobd_main(["executions"], env)
    reliability.observe(
        "store-vanished",
        "sqlite",
        runs=1,
        orphans=len(orphans),
        detail=f"store {how}: daemon exit {code}; `executions` exit {read[0]}",
    )
    assert code == 69
    assert orphans == []  # the running `sleep 300` ended with the daemon
    assert f"{db}" in log and f"was {how}" in log, log
    assert "Traceback" not in log
    if how == "deleted":
        assert read[0] == 69 and f"no store at {db}" in read[2], read
        assert not db.exists()  # nothing made a fresh, empty one


@pytest.mark.parametrize(
    "command",
    [
        ["executions"],
        ["status"],
        ["check"],
        ["show", "1"],
        ["logs", "1"],
        ["audit"],
        ["cancel", "1"],
    ],
)
def test_a_command_on_a_missing_store_says_so_and_creates_nothing(
    command: list[str], tmp_path: Path
) -> None:
    db = tmp_path / "jobd.db"
    config = write_config(tmp_path / "jobd.toml", '[jobs.x]\ncommand = ["true"]\n')
    code, _out, err, error = jobd_main(
        command, {"JOBD_STORE": f"sqlite:///{db}", "JOBD_CONFIG": str(config)}
    )
    assert error is None
    assert code == 69 and err.startswith(f"jobd: no store at {db} (`jobd run`"), err
    assert list(tmp_path.iterdir()) == [config]


def test_list_without_a_store_shows_the_config_file_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "jobd.db"
    config = write_config(tmp_path / "jobd.toml", '[jobs.x]\ncommand = ["true"]\n')
    env = {"JOBD_STORE": f"sqlite:///{db}", "JOBD_CONFIG": str(config)}
    code, out, err, error = jobd_main(["list"], env)
    assert error is None and code == 0, err
    assert "x" in out and "not applied" in out
    assert f"jobd: no store at {db} yet" in err
    # Nor does a trigger: no daemon ever ran there, and it says so.
    code, _out, err, _error = jobd_main(["trigger", "x"], env)
    assert code == 69 and "no live jobd daemon" in err and f"no store at {db} yet" in err
    assert list(tmp_path.iterdir()) == [config]


def test_run_and_schedule_create_a_missing_store(tmp_path: Path) -> None:
    db = tmp_path / "jobd.db"
    config = write_config(tmp_path / "jobd.toml", "")
    env = {"JOBD_STORE": f"sqlite:///{db}", "JOBD_CONFIG": str(config)}
    code, _out, err, _error = jobd_main(["schedule", "x", "@daily", "--", "true"], env)
    assert code == 0, err
    assert db.exists()


# -- values longer than a column ----------------------------------------------------------

# 56 characters: Linux allows 64 in a host name, and an instance id adds the pid
# and a suffix to it.
LONG_HOST = "build-runner-eu-west-9-az3-rack17-node042.ci.example.org"[:56]
# Every minute of every hour, spelled out: 237 characters (as in the finding)
# that `validate` accepts.
LONG_SCHEDULE = f"{','.join(map(str, range(60)))} {','.join(map(str, range(24)))} * * *"


def test_a_long_host_name_and_a_long_schedule_fit_the_store(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """The finding: on PostgreSQL the daemon could not start on a host whose name has
    56 characters, nor with a 237-character schedule, and said "store unavailable"."""
    assert len(LONG_HOST) == 56 and len(LONG_SCHEDULE) > 200
    config = write_config(
        tmp_path / "jobd.toml",
        f'[jobs.long]\nschedule = "{LONG_SCHEDULE}"\ncommand = ["true"]\n'
        '[jobs.now]\ncommand = ["true"]\n',
    )
    check = subprocess.run(
        jobd_cmd("--config", str(config), "validate"), capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    daemon = Daemon(
        config,
        store_url,
        tmp_path / "jobd.log",
        prefix=["unshare", "--uts", "sh", "-c", f'hostname {LONG_HOST} && exec "$@"', "jobd"],
    )
    try:
        daemon.start()
        with closing(open_store(store_url)) as store:
            assert store.job("long").spec.schedule == LONG_SCHEDULE
            run_id = store.enqueue(NewRun("now", Trigger.MANUAL, store.now()))
            run = wait_for(lambda: store.execution(run_id).status.final and store.execution(run_id))
            instances = [i["host"] for i in store.instances()]
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    backend = store_url.split(":")[0]
    reliability.observe(
        "store-limits", backend, runs=1, detail=f"56-char host, {len(LONG_SCHEDULE)}-char schedule"
    )
    assert run.status is Status.SUCCEEDED and run.host == LONG_HOST
    assert LONG_HOST in instances
