"""Fault: someone tries to use jobd against its own host. The tests run as root.

- A config another user owns, or that group or others may write, is refused,
  as cron refuses such a crontab, at start and on reload (SIGHUP).
- The store and everything beside it are private (0600, a 0700 directory),
  whatever the umask the daemon was started with.
- `user = "nobody"` runs the job as nobody (it cannot read the store); a daemon
  that is not root refuses to run a job as another user, and says why.
- Env values and store passwords never appear in list, show, status, executions,
  audit, validate or the daemon's log; `secret_env` values are masked in the
  captured output; no secret is in any job process's argv (/proc/PID/cmdline),
  for every job kind; the store URL does not reach the jobs' environment.

tests/test_config.py, test_store.py, test_runner.py and test_log.py check the
pieces; these check the whole, with real daemon processes.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.conftest import dsn_with_password, jobd_cmd, open_store, wait_for
from tests.faults import Daemon, jobd_main, q, stuck_rows, write_config
from tests.processes import marked
from tests.reliability import Recorder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.skipif(os.geteuid() != 0, reason="the security checks need root"),
]

NOBODY = pwd.getpwnam("nobody")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]
TOKEN = "tok-7f3a9c2e51"  # in secret_env: masked even in the captured output
REGION = "region-eu-west-9"  # a plain env value: never in jobd's own output
PASSWORD = "pw-S3cret-77"  # the store's
DB_PASSWORD = "db-Pa55-word-31"  # a sql job's database, written into the config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the config file -----------------------------------------------------------------

CONFIG = '[jobs.backup]\nschedule = "30 2 * * *"\ncommand = ["true"]\n'


@pytest.mark.parametrize(
    "how", ["owned by nobody", "group-writable", "world-writable", "world-writable, nobody's"]
)
def test_root_refuses_a_config_others_could_have_written(
    how: str, tmp_path: Path, reliability: Recorder
) -> None:
    config = write_config(tmp_path / "jobd.toml", CONFIG)
    if "nobody" in how:
        os.chown(config, NOBODY.pw_uid, NOBODY.pw_gid)
    if "group" in how:
        config.chmod(0o664)
    if "world" in how:
        config.chmod(0o646)
    # No JOBD_STORE: the store's URL would come from the file, which is not read.
    env = {"JOBD_CONFIG": str(config), "XDG_DATA_HOME": str(tmp_path / "data")}
    results = {
        " ".join(args): jobd_main(args, env)[:3]
        for args in (["validate"], ["list"], ["executions"], ["next", "backup"])
    }
    for args in (["run", "--once"], ["run"]):
        done = subprocess.run(
            jobd_cmd(*args), env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        )
        results[" ".join(args)] = (done.returncode, done.stdout, done.stderr)
    refused = {
        cmd: code == 2 and err.count("\n") == 1 and "refused" in err and "as cron does" in err
        for cmd, (code, _out, err) in results.items()
    }
    reliability.observe(
        "security",
        "sqlite",
        runs=len(results),
        detail=f"config {how}: {sum(refused.values())} of {len(results)} commands refused it",
    )
    assert all(refused.values()), results
    assert not (tmp_path / "data" / "jobd").exists()  # refused before touching any store


def test_a_reload_of_a_config_made_world_writable_is_rejected(
    tmp_path: Path, reliability: Recorder
) -> None:
    config = write_config(tmp_path / "jobd.toml", CONFIG)
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    daemon = Daemon(config, url, tmp_path / "jobd.log")
    store = open_store(url)
    evil = tmp_path / "evil-ran"
    try:
        daemon.start()
        # Someone who can write the file adds a job, every second.
        config.write_text(
            CONFIG + f'[jobs.evil]\nschedule = "* * * * * *"\nshell = {q(f"touch {evil}")}\n'
        )
        config.chmod(0o666)
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: "reload rejected" in daemon.log(), timeout=20)
        time.sleep(1.5)
        rejected = store.job("evil") is None and not evil.exists()
        config.chmod(0o644)  # root fixes the mode: the same text is now root's choice
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: store.job("evil") is not None, timeout=20)
        assert daemon.stop() == 0
        reliability.observe(
            "security",
            "sqlite",
            runs=1,
            orphans=len(daemon.orphans()),
            detail="SIGHUP with a world-writable config: reload rejected, its job never ran",
        )
        assert rejected
        assert "writable by group or others" in daemon.full_log()
    finally:
        daemon.cleanup()
        store.close()


# -- files -----------------------------------------------------------------------------


def test_the_store_and_its_side_files_are_private_under_any_umask(
    tmp_path: Path, reliability: Recorder
) -> None:
    config = write_config(tmp_path / "jobd.toml", '[jobs.a]\ncommand = ["true"]\n')
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # one others can write is refused (test_fault_root_files.py)
    data.chmod(0o755)
    db = data / "jobd.db"
    url = f"sqlite:///{db}"
    daemon = Daemon(config, url, tmp_path / "jobd.log", preexec=lambda: os.umask(0))
    store = None
    try:
        daemon.start()
        store = open_store(url)
        run_id = store.enqueue(NewRun("a", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(run_id).status.final, timeout=20)
        found = {p.name: mode(p) for p in data.iterdir()}
        found.update({f"jobd.db.d/{p.name}": mode(p) for p in (data / "jobd.db.d").iterdir()})
        wake = []
        for sock in (data / "jobd.db.d" / "wake").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a socket may come and go
                wake.append(mode(sock))
        locks = [mode(lock) for lock in (data / "jobd.db.d" / "instances").iterdir()]
        assert daemon.stop() == 0
        reliability.observe(
            "security",
            "sqlite",
            runs=1,
            detail="umask 000: " + ", ".join(f"{n} {m:04o}" for n, m in sorted(found.items())),
        )
        assert found == {
            "jobd.db": 0o600,
            "jobd.db-wal": 0o600,
            "jobd.db-shm": 0o600,
            "jobd.db.d": 0o700,
            "jobd.db.d/leader": 0o600,
            "jobd.db.d/wake": 0o700,
            "jobd.db.d/instances": 0o700,
        }
        assert wake and all(m & 0o077 == 0 for m in wake)
        assert locks == [0o600]  # the daemon's liveness lock
    finally:
        daemon.cleanup()
        if store is not None:
            store.close()


# -- users -----------------------------------------------------------------------------


def test_a_job_with_user_runs_as_that_user(tmp_path: Path, reliability: Recorder) -> None:
    db = tmp_path / "jobd.db"
    script = f"id -u; id -g; cat {db} > /dev/null 2>&1 && echo read-the-store || echo denied"
    config = write_config(
        tmp_path / "jobd.toml", f'[jobs.as_nobody]\nuser = "nobody"\nshell = {q(script)}\n'
    )
    url = f"sqlite:///{db}"
    daemon = Daemon(config, url, tmp_path / "jobd.log")
    store = open_store(url)
    try:
        daemon.start()
        run_id = store.enqueue(NewRun("as_nobody", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(run_id).status.final, timeout=20)
        run = store.execution(run_id)
        assert daemon.stop() == 0
        reliability.observe(
            "security",
            "sqlite",
            runs=1,
            stuck=stuck_rows(store),
            detail=f"user = nobody: the job ran as uid {run.log.split()[0]} and "
            + ("could not read" if "denied" in run.log else "READ")
            + " the store",
        )
        assert run.status is Status.SUCCEEDED, run.error
        assert run.log.split() == [str(NOBODY.pw_uid), str(NOBODY.pw_gid), "denied"]
    finally:
        daemon.cleanup()
        store.close()


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody owns (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="jobd-nobody-"))
    path.chmod(0o755)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nobody_jobd(nobody_dir: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """How nobody starts this checkout's jobd: the command and its environment.

    A clone in a directory only root may enter (`mktemp -d`) is out of nobody's
    reach: then the checkout is bind-mounted into nobody's directory and its
    packages are found through PYTHONPATH."""
    probe = [sys.executable, "-c", "import jobd, click, peewee"]
    if subprocess.run([*AS_NOBODY, *probe], capture_output=True).returncode == 0:
        yield jobd_cmd(), {}
        return
    repo = Path(__file__).resolve().parents[1]
    venv = Path(sys.prefix)
    if not venv.is_relative_to(repo):
        pytest.skip(f"nobody cannot read jobd's Python environment at {venv}")
    mounted = nobody_dir / "checkout"
    mounted.mkdir()
    if subprocess.run(["mount", "--bind", str(repo), str(mounted)]).returncode != 0:
        pytest.skip(f"nobody cannot read {repo}, and it cannot be bind-mounted for nobody")
    try:
        python = mounted / Path(sys.executable).relative_to(repo)
        site = [p for p in sys.path if p.startswith(str(venv)) and p.endswith("site-packages")]
        paths = [str(mounted), *(str(mounted / Path(p).relative_to(repo)) for p in site)]
        env = {"PYTHONPATH": os.pathsep.join(paths)}
        yield [str(python), "-m", "jobd"], env
    finally:
        subprocess.run(["umount", "-l", str(mounted)])


def test_a_daemon_that_is_not_root_refuses_user(
    nobody_dir: Path, nobody_jobd: tuple[list[str], dict[str, str]], reliability: Recorder
) -> None:
    jobd, jobd_env = nobody_jobd
    marker = nobody_dir / "ran-as-root"
    config = write_config(
        nobody_dir / "jobd.toml",
        f'[jobs.escalate]\nuser = "root"\nshell = {q(f"touch {marker}")}\n',
    )
    url = f"sqlite:///{nobody_dir / 'jobd.db'}"
    env = {"HOME": str(nobody_dir), "XDG_DATA_HOME": str(nobody_dir / "data"), **jobd_env}
    daemon = Daemon(config, url, nobody_dir / "jobd.log", env=env, prefix=AS_NOBODY, jobd=jobd)
    try:
        daemon.start()
        trigger = subprocess.run(
            [*AS_NOBODY, *jobd, "trigger", "escalate", "--wait"],
            cwd=nobody_dir,
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert daemon.stop() == 0
        log = daemon.full_log()
        reliability.observe(
            "security",
            "sqlite",
            runs=1,
            detail="daemon as nobody, job with user = root: the run failed, "
            + ("saying it needs root" if "needs jobd to run as root" in trigger.stderr else "")
            + ("; the job never ran" if not marker.exists() else "; THE JOB RAN"),
        )
        assert trigger.returncode == 1, trigger.stderr
        assert "needs jobd to run as root" in trigger.stderr
        assert not marker.exists()
        assert "Traceback" not in log
    finally:
        daemon.cleanup()


# -- secrets ---------------------------------------------------------------------------

JOB_MODULE = """
import os, sys, time

def leak():
    print("call", os.environ["API_TOKEN"], os.environ["REGION"])
    print(os.environ.get("JOBD_STORE", "no store in env"))
    sys.stdout.flush()
    time.sleep(1.5)
"""


KINDS = ("argv", "shell", "call", "sql", "http")


def secrets_config(directory: Path, http_port: int) -> str:
    env = f'env = {{ API_TOKEN = "{TOKEN}", REGION = "{REGION}" }}\nsecret_env = ["API_TOKEN"]\n'
    echo = 'echo "$API_TOKEN $REGION"; env; sleep 1.5'
    database = dsn_with_password(DB_PASSWORD)
    headers = '{ Authorization = "Bearer ${API_TOKEN}" }'
    return (
        "[jobd]\nmax_concurrent = 8\n"
        f"[jobs.argv]\ncommand = {json.dumps(['/bin/sh', '-c', echo])}\n{env}"
        f"[jobs.shell]\nshell = {q(echo)}\n{env}"
        f'[jobs.call]\ncall = "leaky_job:leak"\ncwd = {q(str(directory))}\n{env}'
        f'[jobs.sql]\nsql = "SELECT pg_sleep(1.5), 42 AS answer"\ndatabase = {q(database)}\n{env}'
        f'[jobs.http]\nhttp = {{ url = "http://127.0.0.1:{http_port}/slow", '
        f"headers = {headers} }}\n{env}"
    )


class SlowEcho(http.server.BaseHTTPRequestHandler):
    """Answers after 1.5 s (so the job's process can be looked at) with the
    Authorization header it got: a secret the job's output must mask."""

    def do_GET(self) -> None:
        time.sleep(1.5)
        body = f"got {self.headers.get('Authorization')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def cmdlines(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def test_secrets_never_leak(
    store_url: str, tmp_path: Path, reliability: Recorder, postgres_admin: Any, http_port: int
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    if backend == "postgresql":  # trust authentication: any password is accepted
        store_url = store_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    (tmp_path / "leaky_job.py").write_text(JOB_MODULE)
    config = write_config(tmp_path / "jobd.toml", secrets_config(tmp_path, http_port))
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    secrets = [TOKEN, REGION, PASSWORD, DB_PASSWORD]
    try:
        daemon.start()
        ids = [store.enqueue(NewRun(j, Trigger.MANUAL, store.now())) for j in KINDS]
        # The daemon and every job's process at once (they all take 1.5 s).
        wait_for(lambda: len(marked(daemon.token)) >= 1 + len(KINDS), timeout=20)
        argvs = cmdlines(marked(daemon.token))
        wait_for(lambda: all(store.execution(i).status.final for i in ids), timeout=30)
        env = {**daemon.env, "JOBD_CONFIG": str(config)}
        outputs = {}
        for args in (
            ["list", "--json"],
            ["list"],
            ["executions", "--json"],
            ["status", "--json"],
            ["status"],
            ["validate", "--json"],
            ["audit", "--json"],
            ["check"],
            *[["show", "--json", str(i)] for i in ids],
            *[["show", str(i)] for i in ids],
            *[["logs", str(i)] for i in ids],
        ):
            _code, out, err, error = jobd_main(args, env)
            assert error is None, (args, error)
            outputs[" ".join(args)] = out + err
        assert daemon.stop() == 0
        runs = [store.execution(i) for i in ids]
        log = daemon.full_log()
        leaks = []
        for name, text in outputs.items():
            allowed = [REGION] if name.startswith(("logs", "show")) else []  # a job's own output
            leaks += [(name, s) for s in secrets if s in text and s not in allowed]
        leaks += [("daemon log", s) for s in secrets if s in log]
        leaks += [("argv", s) for s in secrets for line in argvs if s in line]
        leaks += [
            (f"output of {r.job}", s)
            for r in runs
            for s in (TOKEN, PASSWORD, DB_PASSWORD)
            if s in r.log + (r.error or "")
        ]
        reliability.observe(
            "security",
            backend,
            runs=len(runs),
            stuck=stuck_rows(store),
            detail=f"secrets in {len(outputs)} command outputs, the daemon log, "
            f"{len(argvs)} process argvs and {len(KINDS)} job kinds' output: {len(leaks)} leaks",
        )
        assert not leaks, leaks
        assert all(r.status is Status.SUCCEEDED for r in runs), [r.error for r in runs]
        by_job = {run.job: run for run in runs}
        assert "got Bearer ***" in by_job["http"].log  # the echoed header, masked
        assert "42" in by_job["sql"].log
        for run in runs:
            if run.job in ("sql", "http"):
                continue
            assert "***" in run.log and REGION in run.log  # masked, and the plain value kept
            assert "JOBD_STORE" not in run.log or "no store in env" in run.log
    finally:
        daemon.cleanup()
        store.close()


def test_a_daemon_that_is_not_root_says_so_for_each_user_job_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from jobd.core.config.parse import parse_config
    from jobd.daemon.startup import check_users

    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)
    config = parse_config('[jobs.escalate]\nuser = "root"\nshell = "true"\n')
    with caplog.at_level("ERROR", logger="jobd"):
        check_users(config)
    assert "user = 'root'" in caplog.text and "runs will fail" in caplog.text


ENCODED_TOKEN = 'tok a"b/c+d&e=f-48151623'  # one that URL and JSON encoding change
PRINT_ENCODED = (
    "import json, os, urllib.parse as u\n"
    "t = os.environ['API_TOKEN']\n"
    "print('raw', t)\n"
    "print('percent', u.quote(t, safe=''))\n"
    "print('path', u.quote(t))\n"
    "print('form', u.quote_plus(t))\n"
    "print('json', json.dumps(t))\n"
    "print('url https://api.internal/cb?token=' + u.quote(t, safe='') + '&x=1')\n"
)


def test_an_encoded_secret_is_masked_and_nothing_is_said_dropped(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    config = write_config(
        tmp_path / "jobd.toml",
        f"[jobs.encoded]\ncommand = {json.dumps(['python3', '-c', PRINT_ENCODED])}\n"
        f'env = {{ API_TOKEN = {q(ENCODED_TOKEN)} }}\nsecret_env = ["API_TOKEN"]\n',
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    try:
        daemon.start()
        run_id = store.enqueue(NewRun("encoded", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(run_id).status.final, timeout=30)
        env = {**daemon.env, "JOBD_CONFIG": str(config)}
        code, out, err, error = jobd_main(["logs", str(run_id)], env)
        _code, shown, _err, _error = jobd_main(["show", str(run_id)], env)
        assert daemon.stop() == 0
        import urllib.parse

        forms = {
            ENCODED_TOKEN,
            urllib.parse.quote(ENCODED_TOKEN, safe=""),
            urllib.parse.quote(ENCODED_TOKEN),
            urllib.parse.quote_plus(ENCODED_TOKEN),
            json.dumps(ENCODED_TOKEN)[1:-1],
        }
        leaked = sorted(form for form in forms if form in out)
        reliability.observe(
            "security",
            backend,
            runs=1,
            stuck=stuck_rows(store),
            detail=f"secret printed raw, percent-, form- and JSON-encoded: {len(leaked)} "
            f"forms unmasked; `jobd logs` said {err.strip() or 'nothing'} about dropped bytes",
        )
        assert error is None and code == 0, (code, err, error)
        assert not leaked, out
        assert err == "", err  # nothing was dropped, so nothing is said to be
        assert "all kept" in shown, shown
        assert [line.split()[0] for line in out.splitlines()] == [
            "raw", "percent", "path", "form", "json", "url",
        ]  # fmt: skip
        assert out.splitlines()[0] == "raw ***"
    finally:
        daemon.cleanup()
        store.close()
