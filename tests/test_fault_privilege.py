"""Fault: a job tries to reach what only jobd should hold. The tests run as root.

- A job run as `nobody` by a root daemon finds no store URL, no `PG*` and no
  `JOBD_*` variable of the daemon in its environment (/proc/self/environ), and
  cannot read the store's password file; a job that names such a variable in
  its own `env` gets it.
- jobd's own child runners (sql, http, call) never import from the job's
  working directory: a `jobd` package planted in a world-writable `cwd` is
  never run.
- A malformed store URL is a one-line config error (exit 2) that never shows
  the password, from `jobd run`, `jobd validate` and the other commands, whether
  it comes from `--store`, $JOBD_STORE or the config file.
- A config job whose definition was rewritten in the store (by anyone who could
  write its `jobs` table) is not run: the run fails saying so, `jobd show` does
  not vouch for it with the file's hash, and SIGHUP restores the file's.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.core.model import JobSpec, NewRun, Status, Trigger
from tests.conftest import jobd_cmd, open_store, wait_for
from tests.faults import Daemon, jobd_main, q, stuck_rows, write_config
from tests.reliability import Recorder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.skipif(os.geteuid() != 0, reason="the privilege checks need root"),
]

NOBODY = pwd.getpwnam("nobody")
PASSWORD = "pw-St0re-S3cret-91"  # the store's
# jobd's own variables a job is given: which run it is.
RUN_IDENTITY = {
    "JOBD_JOB",
    "JOBD_EXECUTION_ID",
    "JOBD_ATTEMPT",
    "JOBD_TRIGGER",
    "JOBD_SCHEDULED_FOR",
    "JOBD_INSTANCE",
}


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def with_password(url: str) -> str:
    """The PostgreSQL test URL with a password (trust authentication accepts any)."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable directory anyone can enter (tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="jobd-open-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- 1. the store's credentials never reach a job ------------------------------------

# Prints the job's own environment as the kernel has it, one variable a line,
# then tries the password file the daemon was given and the SQLite store.
SNOOP = (
    "cat /proc/self/environ | tr '\\0' '\\n' | grep -E '^(PG|JOBD_|CREDENTIALS_DIRECTORY)' "
    "| sed 's/^/env: /'; cat {pgpass} 2>/dev/null | sed 's/^/pgpass: /' || true; "
    "head -c 16 {store} > /dev/null 2>&1 && echo 'store: READ'; echo done"
)


def test_a_job_as_nobody_sees_no_store_credentials(
    store_url: str, tmp_path: Path, open_dir: Path, reliability: Recorder
) -> None:
    backend = backend_of(store_url)
    if backend == "postgresql":
        store_url = with_password(store_url)
    pgpass = open_dir / "pgpass"
    pgpass.write_text(f"*:*:*:*:{PASSWORD}\n")
    pgpass.chmod(0o600)  # root's, as libpq requires
    store_file = store_url[len("sqlite:///") :] if backend == "sqlite" else "/nonexistent"
    script = SNOOP.format(pgpass=pgpass, store=store_file)
    config = write_config(
        tmp_path / "jobd.toml",
        f'[jobs.snoop]\nuser = "nobody"\ncwd = {q(str(open_dir))}\nshell = {q(script)}\n'
        f'[jobs.own]\nuser = "nobody"\ncwd = {q(str(open_dir))}\nshell = {q(script)}\n'
        'env = { PGHOST = "reports.internal", JOBD_COLOUR = "blue" }\n',
    )
    daemon_env = {
        "PGPASSWORD": PASSWORD,
        "PGPASSFILE": str(pgpass),
        "PGUSER": "jobd",
        "PGSERVICEFILE": str(open_dir / "pg_service.conf"),
        "JOBD_SOMETHING": PASSWORD,
        "CREDENTIALS_DIRECTORY": str(open_dir),
    }
    daemon = Daemon(config, store_url, tmp_path / "jobd.log", env=daemon_env)
    store = open_store(store_url)
    try:
        daemon.start()
        ids = {
            job: store.enqueue(NewRun(job, Trigger.MANUAL, store.now())) for job in ("snoop", "own")
        }
        wait_for(lambda: all(store.execution(i).status.final for i in ids.values()), timeout=30)
        runs = {job: store.execution(i) for job, i in ids.items()}
        assert daemon.stop() == 0
        seen = {
            job: {
                line[len("env: ") :].split("=", 1)[0]: line.split("=", 1)[1]
                for line in run.log.splitlines()
                if line.startswith("env: ")
            }
            for job, run in runs.items()
        }
        leaked = {job: sorted(set(names) - RUN_IDENTITY) for job, names in seen.items()}
        read_pgpass = [job for job, run in runs.items() if "pgpass:" in run.log]
        read_store = [job for job, run in runs.items() if "store: READ" in run.log]
        reliability.observe(
            "privilege",
            backend,
            runs=len(runs),
            stuck=stuck_rows(store),
            detail=f"job as nobody under a root daemon: {len(leaked['snoop'])} PG*/JOBD_* "
            f"variables of the daemon in its environment, password file "
            + ("READ" if read_pgpass else "not readable")
            + (", store file READ" if read_store else ""),
        )
        assert all(run.status is Status.SUCCEEDED for run in runs.values()), runs
        assert leaked["snoop"] == [], runs["snoop"].log
        # What the job names in its own env, it gets: its own values, nothing else.
        assert leaked["own"] == ["JOBD_COLOUR", "PGHOST"], runs["own"].log
        assert seen["own"]["PGHOST"] == "reports.internal"
        assert not read_pgpass and not read_store
        assert all(PASSWORD not in run.log for run in runs.values())
    finally:
        daemon.cleanup()
        store.close()


def test_an_sql_job_gets_the_store_only_when_it_names_it(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    store_url = with_password(postgres_url)
    no_database = write_config(tmp_path / "none.toml", '[jobs.q]\nsql = "SELECT 1"\n')
    named = write_config(
        tmp_path / "named.toml", '[jobs.q]\nsql = "SELECT 1"\ndatabase = "store"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("JOBD_STORE", "JOBD_CONFIG")}
    results = {}
    for config in (no_database, named):
        for how in ("--store", "JOBD_STORE"):
            args = ["--config", str(config), "validate"]
            run_env = dict(env)
            if how == "--store":
                args = ["--store", store_url, *args]
            else:
                run_env["JOBD_STORE"] = store_url
            done = subprocess.run(
                jobd_cmd(*args), env=run_env, capture_output=True, text=True, timeout=60
            )
            results[(config.stem, how)] = (done.returncode, done.stdout + done.stderr)
    reliability.observe(
        "privilege",
        "postgresql",
        runs=len(results),
        detail="sql job without `database`: refused from --store and $JOBD_STORE alike; "
        '`database = "store"` accepted by both',
    )
    for how in ("--store", "JOBD_STORE"):
        code, text = results[("none", how)]
        assert code == 2 and "key 'database'" in text and PASSWORD not in text, (how, text)
        assert text.count("\n") == 1, text
        assert results[("named", how)][0] == 0, results[("named", how)]

    # And the daemon runs it against the store it named.
    daemon = Daemon(named, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    try:
        daemon.start()
        run_id = store.enqueue(NewRun("q", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(run_id).status.final, timeout=30)
        run = store.execution(run_id)
        assert daemon.stop() == 0
        assert run.status is Status.SUCCEEDED, (run.error, run.log)
        assert PASSWORD not in run.log
    finally:
        daemon.cleanup()
        store.close()


# -- 3. jobd's child runners never import from the job's cwd --------------------------

PLANTED = """
import os, pathlib
pathlib.Path(os.path.dirname(__file__), "..", "PLANTED-RAN").write_text(str(os.getuid()))
raise SystemExit(13)
"""
USER_JOB = "def main():\n    print('user code ran')\n"


def test_a_planted_jobd_package_in_cwd_is_not_imported(
    store_url: str, tmp_path: Path, open_dir: Path, reliability: Recorder
) -> None:
    (open_dir / "jobd").mkdir()
    (open_dir / "jobd" / "__init__.py").write_text(PLANTED)
    (open_dir / "jobd" / "sqlrunner.py").write_text(PLANTED)
    (open_dir / "userjob.py").write_text(USER_JOB)
    app = open_dir / "app.db"
    subprocess.run(["sqlite3", str(app), "CREATE TABLE t (x int)"], check=False)
    if not app.exists():
        import sqlite3

        sqlite3.connect(app).execute("CREATE TABLE t (x int)").connection.close()
    cwd = f"cwd = {q(str(open_dir))}\n"
    config = write_config(
        tmp_path / "jobd.toml",
        f'[jobs.sql]\nsql = "SELECT 42 AS answer"\ndatabase = "sqlite:///{app}"\n{cwd}'
        f'[jobs.http]\nhttp = {{ url = "http://127.0.0.1:9/" }}\n{cwd}'
        f'[jobs.call]\ncall = "userjob:main"\n{cwd}',
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    try:
        daemon.start()
        ids = {
            job: store.enqueue(NewRun(job, Trigger.MANUAL, store.now()))
            for job in ("sql", "http", "call")
        }
        wait_for(lambda: all(store.execution(i).status.final for i in ids.values()), timeout=30)
        runs = {job: store.execution(i) for job, i in ids.items()}
        assert daemon.stop() == 0
        planted_ran = (open_dir / "PLANTED-RAN").exists()
        reliability.observe(
            "privilege",
            backend_of(store_url),
            runs=len(runs),
            stuck=stuck_rows(store),
            detail="a jobd package planted in a world-writable cwd, sql/http/call jobs: "
            + ("IMPORTED" if planted_ran else "never imported"),
        )
        assert not planted_ran
        assert runs["sql"].status is Status.SUCCEEDED, (runs["sql"].error, runs["sql"].log)
        assert "42" in runs["sql"].log
        # Nothing listens on port 9: the http runner itself ran and said so.
        assert runs["http"].status is Status.FAILED and "no answer" in (runs["http"].error or "")
        # The call job's own module, in its cwd, is still found.
        assert runs["call"].status is Status.SUCCEEDED, (runs["call"].error, runs["call"].log)
        assert "user code ran" in runs["call"].log
    finally:
        daemon.cleanup()
        store.close()


# -- 4. a malformed store URL is one line, exit 2, without the password --------------

BAD_URLS = [
    "postgresql://u:S3cret@[::1/db",
    "postgresql://u:S3cret@db.internal:abc/db",
    "postgresql://u:S3cret@db.internal:99999/db",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_store_url_is_one_line_without_the_password(
    url: str, tmp_path: Path, reliability: Recorder
) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("JOBD_STORE", "JOBD_CONFIG")}
    base["XDG_DATA_HOME"] = str(tmp_path / "data")
    plain = write_config(tmp_path / "plain.toml", '[jobs.a]\ncommand = ["true"]\n')
    in_file = write_config(
        tmp_path / "in-file.toml", f'[jobd]\nstore = {q(url)}\n[jobs.a]\ncommand = ["true"]\n'
    )
    sources: dict[str, tuple[list[str], dict[str, str]]] = {
        "--store": (["--config", str(plain), "--store", url], base),
        "JOBD_STORE": (["--config", str(plain)], {**base, "JOBD_STORE": url}),
        "config file": (["--config", str(in_file)], base),
    }
    results = {}
    for source, (prefix, env) in sources.items():
        for args in (["run"], ["run", "--once"], ["validate"]):
            done = subprocess.run(
                jobd_cmd(*prefix, *args), env=env, capture_output=True, text=True, timeout=60
            )
            results[(source, " ".join(args))] = (done.returncode, done.stdout, done.stderr)
        for args in (["list"], ["executions"], ["status"], ["show", "1"], ["trigger", "a"]):
            code, out, err, error = jobd_main([*prefix, *args], env)
            results[(source, " ".join(args))] = (code, out, err + (repr(error) if error else ""))
    # The same URL given to `jobd import pg-cron`, which connects to it.
    code, out, err, error = jobd_main(["import", "pg-cron", url], base)
    results[("argument", "import pg-cron")] = (code, out, err + (repr(error) if error else ""))
    bad = {
        key: (code, out, err)
        for key, (code, out, err) in results.items()
        if code != 2
        or "S3cret" in out + err
        or "Traceback" in err
        or err.count("\n") != 1
        or "URL" not in err
    }
    reliability.observe(
        "bad-input",
        "postgresql",
        runs=len(results),
        detail=f"store URL {url.replace('S3cret', '***')} from --store, JOBD_STORE or the "
        f"file: {len(results) - len(bad)} of {len(results)} commands exit 2 in one line "
        "without the password",
    )
    assert not bad, bad
    assert not (tmp_path / "data" / "jobd").exists()


# -- 1. a config job rewritten in the store is not run --------------------------------


def test_a_config_job_rewritten_in_the_store_is_not_run(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = backend_of(store_url)
    honest = tmp_path / "honest-ran"
    pwned = tmp_path / "pwned"
    config = write_config(
        tmp_path / "jobd.toml",
        f'[jobs.victim]\nuser = "nobody"\nshell = {q(f"echo honest > {honest} || true")}\n',
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    try:
        daemon.start()
        row = store.m.Job.get(store.m.Job.name == "victim")
        file_hash = row.config_hash
        # A store writer turns the job into root's, keeping the file's hash in place.
        data = json.loads(row.spec)
        data.update(user=None, shell=f"id -u > {pwned}")
        tampered = JobSpec.from_json(json.dumps(data, sort_keys=True))
        store.m.Job.update(spec=tampered.to_json()).where(store.m.Job.name == "victim").execute()
        run_id = store.enqueue(NewRun("victim", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(run_id).status.final, timeout=30)
        refused = store.execution(run_id)
        env = {**daemon.env, "JOBD_CONFIG": str(config)}
        _code, shown, _err, _exc = jobd_main(["show", str(run_id)], env)
        # SIGHUP notices it and puts the file's definition back.
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: "config reloaded" in daemon.log(), timeout=20)
        reload_line = next(line for line in daemon.log().splitlines() if "config reloaded" in line)
        restored = store.m.Job.get(store.m.Job.name == "victim")
        again = store.enqueue(NewRun("victim", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(again).status.final, timeout=30)
        after = store.execution(again)
        assert daemon.stop() == 0
        # Rewritten again and run by `trigger --local` as root: the file's job runs.
        store.m.Job.update(spec=tampered.to_json()).where(store.m.Job.name == "victim").execute()
        local = subprocess.run(
            jobd_cmd("--config", str(config), "trigger", "victim", "--local", "--wait"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        reliability.observe(
            "privilege",
            backend,
            runs=3,
            stuck=stuck_rows(store),
            detail="config job's spec rewritten in the store (hash kept): "
            + ("THE REWRITTEN COMMAND RAN" if pwned.exists() else "refused, run failed")
            + "; SIGHUP: "
            + reload_line.split("config reloaded: ", 1)[-1],
        )
        assert not pwned.exists()
        assert local.returncode == 0, local
        assert refused.status is Status.FAILED, refused
        assert "does not match" in (refused.error or ""), refused.error
        assert refused.config_hash != file_hash
        # `show` gives the hash of what was refused, not the file's.
        assert f"config hash    {refused.config_hash}" in shown, shown
        assert "1 updated" in reload_line, reload_line
        assert JobSpec.from_json(restored.spec).shell == f"echo honest > {honest} || true"
        assert restored.config_hash == file_hash
        assert after.status is Status.SUCCEEDED, (after.error, after.log)
    finally:
        daemon.cleanup()
        store.close()


def test_jobd_started_in_a_writable_directory_imports_nothing_from_it(
    store_url: str, tmp_path: Path, open_dir: Path, reliability: Recorder
) -> None:
    # What `python -m jobd` imports after start-up, planted where it was started.
    for name in ("psycopg2", "click", "peewee", "playhouse", "rich"):
        (open_dir / name).mkdir()
        (open_dir / name / "__init__.py").write_text(PLANTED)
    # (Not `jobd` itself: `python -m jobd` finds jobd where Python looks first, and
    # that is for the one who starts it to choose; the `jobd` script is not affected.)
    (open_dir / "sqlite3.py").write_text(PLANTED.replace('"..", ', ""))
    env = {k: v for k, v in os.environ.items() if k not in ("JOBD_STORE", "JOBD_CONFIG")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    results = [
        subprocess.run(
            jobd_cmd("--store", store_url, *args),
            cwd=open_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for args in (["run", "--once"], ["executions"], ["list"])
    ]
    planted_ran = (open_dir / "PLANTED-RAN").exists()
    reliability.observe(
        "privilege",
        backend_of(store_url),
        runs=len(results),
        detail="python -m jobd started in a world-writable directory holding psycopg2, "
        "click, peewee, sqlite3: " + ("IMPORTED" if planted_ran else "nothing imported from it"),
    )
    assert not planted_ran
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
