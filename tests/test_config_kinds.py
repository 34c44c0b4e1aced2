"""The config's sql and http job kinds, [databases] and [groups.NAME]."""

from __future__ import annotations

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import GroupQuota, JobKind, JobSpec
from jobd.errors import ConfigError

PG_STORE = '[jobd]\nstore = "postgresql://jobd@db/jobd"\n'


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "jobd.toml")
    return str(info.value)


def test_sql_job_runs_in_a_postgresql_store_only_when_it_says_so() -> None:
    config = parse_config(PG_STORE + '[jobs.risk]\nsql = "SELECT fn()"\ndatabase = "store"\n')
    spec = config.jobs["risk"]
    assert spec.kind is JobKind.SQL and spec.sql == "SELECT fn()" and spec.database == "store"
    assert spec.target == "SELECT fn()"
    # The word is kept, never the store's URL: its password stays out of the spec.
    assert "jobd@db" not in spec.to_json()


@pytest.mark.parametrize(
    "store", ["", PG_STORE, '[jobd]\nstore = "sqlite:////var/lib/jobd/jobd.db"\n']
)
def test_sql_job_needs_a_database(store: str) -> None:
    message = error(store + '[jobs.risk]\nsql = "SELECT 1"\n')
    assert "job 'risk': key 'database': an sql job needs `database`" in message


@pytest.mark.parametrize(
    ("override", "env"),
    [
        ("sqlite:////var/lib/jobd/jobd.db", {}),
        (None, {"JOBD_STORE": "sqlite:////x/jobd.db"}),
        (None, {}),
    ],
    ids=["--store", "JOBD_STORE", "default"],
)
def test_the_store_as_database_needs_a_postgresql_store_however_named(
    override: str | None, env: dict[str, str]
) -> None:
    text = '[jobs.risk]\nsql = "SELECT 1"\ndatabase = "store"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "jobd.toml", env, store_override=override)
    assert 'database = "store" needs a PostgreSQL store' in str(info.value)
    pg = "postgresql://jobd@db/jobd"
    assert parse_config(text, "jobd.toml", {}, store_override=pg).jobs["risk"].database == "store"
    assert parse_config(text, "jobd.toml", {"JOBD_STORE": pg}).jobs["risk"].database == "store"


def test_store_is_a_reserved_database_name() -> None:
    assert "reserved" in error('[databases]\nstore = "postgresql://h/d"\n')


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://u:S3cret@[::1/db", "closing ']'"),
        ("postgresql://u:S3cret@db:abc/db", "a port that is not a number"),
        ("postgresql://u:S3cret@db:99999/db", "a port that is not a number"),
        ("postgresql://u:S3/cret@db/db", "a port that is not a number"),
        ("postgresql://u:S3cret@db/db?sslmode", "not key=value"),
        ("postgresql://u:S3cret@db/db?port=0", "a port that is not a number"),
        ("postgresql://u:S3cret@::1/db", "[brackets]"),
        ("postgresql://u:S3cret@db/d%zzb", "'%'"),
        ("postgresql://u:S3cret@a:1,b:0/db", "a port that is not a number"),
    ],
)
def test_malformed_database_urls_are_refused_without_their_password(url: str, problem: str) -> None:
    for text in (f'[databases]\nd = "{url}"\n', f'[jobd]\nstore = "{url}"\n'):
        message = error(text)
        assert problem in message and "S3" not in message and "u:***@" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:${PW}@[::1]:5432/db",
        "postgresql://a:1,b:2/db?target_session_attrs=any",
        "postgresql://u@db:${PORT}/db",
        "postgresql:///db?host=/run/postgresql",
    ],
)
def test_wellformed_database_urls_pass(url: str) -> None:
    config = parse_config(f'[databases]\nd = "{url}"\n')
    assert config.databases["d"] == url


def test_database_names_resolve_to_their_urls() -> None:
    config = parse_config(
        '[databases]\nreporting = "postgresql://report:${REPORT_PW}@db/reporting"\n'
        'cache = "sqlite:////var/lib/app/cache.db"\n'
        '[jobs.a]\nsql = "SELECT 1"\ndatabase = "reporting"\n'
        '[jobs.b]\nsql = "DELETE FROM t"\ndatabase = "cache"\n'
        '[jobs.c]\nsql = "SELECT 1"\ndatabase = "postgresql://x@h/d"\n'
    )
    assert config.databases["cache"] == "sqlite:////var/lib/app/cache.db"
    assert config.jobs["a"].database == "postgresql://report:${REPORT_PW}@db/reporting"
    assert config.jobs["b"].database == "sqlite:////var/lib/app/cache.db"
    assert config.jobs["c"].database == "postgresql://x@h/d"


def test_unknown_database_name_suggests_the_closest() -> None:
    message = error(
        '[databases]\nreporting = "postgresql://h/r"\n'
        '[jobs.a]\nsql = "SELECT 1"\ndatabase = "reportng"\n'
    )
    assert "key 'database': unknown database 'reportng'" in message
    assert "did you mean 'reporting'?" in message


@pytest.mark.parametrize(
    "url", ["mysql://h/d", "sqlite:///relative.db", "sqlite:////", "postgresql://h/${1X}"]
)
def test_bad_database_urls_are_refused(url: str) -> None:
    assert "key 'databases.d'" in error(f'[databases]\nd = "{url}"\n')


def test_only_sql_jobs_take_a_database() -> None:
    message = error('[jobs.a]\ncommand = ["true"]\ndatabase = "postgresql://h/d"\n')
    assert "key 'database': only `sql` jobs take a database" in message


def test_empty_sql_is_refused() -> None:
    assert "key 'sql': must not be empty" in error(PG_STORE + '[jobs.a]\nsql = "  "\n')


def test_http_job_is_normalized() -> None:
    config = parse_config(
        "[jobs.sync]\n"
        'http = { url = "https://edge.example/trigger-sync", '
        'headers = { Authorization = "Bearer ${SERVICE_KEY}" }, '
        "json = { connection = 7, full = true }, expect = [200, 202] }\n"
        "[jobs.ping]\n"
        'http = { url = "http://127.0.0.1:8080/health" }\n'
    )
    sync = config.jobs["sync"]
    assert sync.kind is JobKind.HTTP
    assert sync.http == {
        "method": "POST",  # a payload makes POST the default
        "url": "https://edge.example/trigger-sync",
        "headers": {"Authorization": "Bearer ${SERVICE_KEY}"},
        "json": {"connection": 7, "full": True},
        "expect": [200, 202],
    }
    assert sync.target == "POST https://edge.example/trigger-sync"
    ping = config.jobs["ping"].http
    assert ping["method"] == "GET" and ping["expect"] == [] and "json" not in ping


@pytest.mark.parametrize(
    ("http", "key", "text"),
    [
        ('{ method = "GET" }', "http.url", "required"),
        ('{ url = "ftp://x/y" }', "http.url", "http:// or https://"),
        ('{ url = "https://x", method = "FETCH" }', "http.method", "expected one of GET"),
        ('{ url = "https://x", json = {}, body = "" }', "http.body", "not both"),
        ('{ url = "https://x", expect = [99] }', "http.expect", "status codes"),
        ('{ url = "https://x", expect = 200 }', "http.expect", "status codes"),
        ('{ url = "https://x", headers = { "a b" = "c" } }', "http.headers", "header name"),
        ('{ url = "https://x", headers = { A = "${not-a-name}" } }', "http.headers", "variable"),
        ('{ url = "https://x", json = { at = 2026-01-01 } }', "http.json", "JSON-like"),
        ('{ url = "https://x", metod = "GET" }', "http.metod", "did you mean 'method'?"),
        ('"https://x"', "http", "expected a table"),
    ],
)
def test_bad_http_requests_name_the_key(http: str, key: str, text: str) -> None:
    message = error(f"[jobs.h]\nhttp = {http}\n")
    assert f"job 'h': key '{key}'" in message and text in message


def test_groups_carry_quotas_and_jobs_name_them() -> None:
    config = parse_config(
        "[groups.tenant-a]\nmax_active = 2\nmax_jobs = 50\nmax_retained = 5000\n"
        "[groups.tenant-b]\n"
        '[jobs.scan_a]\ncommand = ["true"]\ngroup = "tenant-a"\n'
    )
    assert config.groups["tenant-a"] == GroupQuota("tenant-a", 2, 50, 5000)
    assert config.groups["tenant-b"] == GroupQuota("tenant-b")  # 0 = unlimited
    assert config.jobs["scan_a"].group == "tenant-a"


def test_unknown_group_suggests_the_closest() -> None:
    message = error('[groups.tenant-a]\n[jobs.j]\ncommand = ["true"]\ngroup = "tenant_a"\n')
    assert "key 'group': unknown group 'tenant_a'" in message
    assert "did you mean 'tenant-a'?" in message


def test_a_file_over_max_jobs_is_refused() -> None:
    jobs = "".join(f'[jobs.j{i}]\ncommand = ["true"]\ngroup = "g"\n' for i in range(3))
    message = error("[groups.g]\nmax_jobs = 2\n" + jobs)
    assert "key 'groups.g.max_jobs': 3 jobs name this group, more than max_jobs = 2" in message


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[groups.g]\nmax_active = -1\n", "groups.g.max_active"),
        ("[groups.g]\nmax_actve = 1\n", "groups.g.max_actve"),
        ('[groups.g]\nmax_jobs = "2"\n', "groups.g.max_jobs"),
        ('[groups."bad name"]\n', "groups.bad name"),
        ("[groups]\ng = 1\n", "groups.g"),
    ],
)
def test_bad_group_tables_name_the_key(table: str, key: str) -> None:
    assert f"key '{key}'" in error(table)


def test_new_fields_survive_the_store_round_trip() -> None:
    config = parse_config(
        PG_STORE + "[groups.g]\n"
        '[jobs.s]\nsql = "SELECT 1"\ngroup = "g"\ndatabase = "store"\n'
        '[jobs.h]\nhttp = { url = "https://x/y", json = [1, "a"] }\n'
    )
    for spec in config.jobs.values():
        assert JobSpec.from_json(spec.to_json()) == spec


URL_PIECES = [
    "u", ":S3cret", "@", "[", "]", "::1", "host", ":", "5432", "abc", "/", "db", "?",
    "sslmode=require", "&", "=", "%", "%zz", "%41", ",", "h2", "#", " ", "\\", "'", '"',
    "password=S3cret", "u:S3cret@", "port=", "host=",
]  # fmt: skip


def test_no_url_that_passes_the_check_makes_libpq_quote_its_password() -> None:
    """libpq's error for a URL it cannot parse quotes the URL whole: every URL it
    would reject that way must be refused by jobd's check first."""
    import random

    from psycopg2.extensions import parse_dsn

    from jobd.core.urls import mask_url, store_url_problem

    rng = random.Random(18)
    leaks, refused = [], 0
    for _ in range(40_000):
        url = "postgresql://" + "".join(rng.choice(URL_PIECES) for _ in range(rng.randint(1, 9)))
        if "S3cret" not in url:
            continue
        problem = store_url_problem(url)
        if problem is not None:
            refused += 1
            assert "S3cret" not in problem, url
            continue
        try:
            parse_dsn(url)
        except Exception as exc:
            if "S3cret" in str(exc):
                leaks.append((url, mask_url(url)))
    assert refused > 1000 and not leaks, leaks[:5]
