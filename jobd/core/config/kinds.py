"""The config's newer tables: `[databases]`, `[groups.NAME]`, and the `sql` and
`http` job kinds. Pure, like config.py, which calls these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jobd.core import model
from jobd.core.config.fields import (
    ENV_NAME,
    JOB_NAME,
    Fields,
    check_keys,
    listen_address,
    named_tables,
    type_name,
)
from jobd.core.model import GroupQuota
from jobd.core.urls import database_url_problem, is_postgres, mask_url
from jobd.errors import ConfigError, did_you_mean

# `${VAR}` in an http request or a database URL, filled in by the child at run time.
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HTTP_KEYS = ("method", "url", "headers", "json", "body", "expect")
GROUP_KEYS = ("max_active", "max_jobs", "max_retained")
API_KEYS = ("listen", "threads", "tls_cert", "tls_key")


def databases_table(raw: Mapping[str, Any], file: str) -> dict[str, str]:
    """`[databases]`: name → URL, for `sql` jobs that say `database = "name"`."""
    result = {}
    for name, url in raw.items():
        key = f"databases.{name}"
        if not JOB_NAME.fullmatch(name):
            raise ConfigError("invalid database name", file=file, key=key)
        if name == model.STORE_DATABASE:
            raise ConfigError(
                f'the name "{name}" is reserved: `database = "{name}"` means jobd\'s own store',
                file=file,
                key=key,
            )
        if not isinstance(url, str):
            raise ConfigError(f"expected a URL string, got {type_name(url)}", file=file, key=key)
        check_database_url(url, file, None, key)
        result[name] = url
    return result


def groups_table(raw: Mapping[str, Any], file: str) -> dict[str, GroupQuota]:
    result = {}
    for name, prefix, quota in named_tables(raw, file, "groups", "group"):
        check_keys(quota, GROUP_KEYS, file=file, job=None, prefix=prefix)
        f = Fields(quota, file, None, prefix=prefix)
        result[name] = GroupQuota(
            name=name,
            max_active=f.int("max_active", 0, minimum=0),
            max_jobs=f.int("max_jobs", 0, minimum=0),
            max_retained=f.int("max_retained", 0, minimum=0),
        )
    return result


def check_database_url(url: str, file: str, job: str | None, key: str) -> None:
    problem = database_url_problem(url)
    if problem is not None and not is_postgres(url):
        problem = (
            "expected postgresql://user@host/db, sqlite:////absolute/path.db, "
            "or a name from [databases]"
        )
    if problem is not None:
        raise ConfigError(
            f"invalid database URL {mask_url(url)!r}: {problem}", file=file, job=job, key=key
        )
    if is_postgres(url):
        check_placeholders(url, file, job, key)


def resolve_database(
    value: str | None, databases: Mapping[str, str], store: str | None, file: str, job: str
) -> str:
    """A `sql` job's database: a URL, a [databases] name (→ its URL), or STORE_DATABASE.

    The store only when the job says so: its URL and password would otherwise reach
    every sql job by default, and whether a job was valid would depend on how the
    store was named (a PostgreSQL one from --store, $JOBD_STORE or the file).
    """
    if value is None:
        raise ConfigError(
            "an sql job needs `database`: a URL, a name from [databases], "
            f'or "{model.STORE_DATABASE}" for jobd\'s own PostgreSQL store',
            file=file,
            job=job,
            key="database",
        )
    if value == model.STORE_DATABASE:
        if store is None or not is_postgres(store):
            raise ConfigError(
                f'database = "{model.STORE_DATABASE}" needs a PostgreSQL store '
                "(jobd never runs job SQL in its own SQLite store)",
                file=file,
                job=job,
                key="database",
            )
        return value
    if "://" not in value:
        if value not in databases:
            raise ConfigError(
                f"unknown database {value!r} (define it in [databases])",
                file=file,
                job=job,
                key="database",
                hint=did_you_mean(value, databases),
            )
        return databases[value]
    check_database_url(value, file, job, "database")
    return value


def check_placeholders(text: str, file: str, job: str | None, key: str) -> None:
    for name in PLACEHOLDER.findall(text):
        if not ENV_NAME.fullmatch(name):
            raise ConfigError(f"invalid variable ${{{name}}}", file=file, job=job, key=key)


def http_request(raw: Mapping[str, Any], file: str, job: str) -> dict[str, Any]:
    """The `http` table, normalized: method, url, headers, expect, and json or body."""
    check_keys(raw, HTTP_KEYS, file=file, job=job, prefix="http.")
    f = Fields(raw, file, job, prefix="http.")
    url = f.str("url")
    if url is None:
        raise ConfigError("required", file=file, job=job, key="http.url")
    if not re.match(r"https?://[^/?#\s]", url):
        raise ConfigError("expected an http:// or https:// URL", file=file, job=job, key="http.url")
    check_placeholders(url, file, job, "http.url")
    if "json" in raw and "body" in raw:
        raise ConfigError("give json or body, not both", file=file, job=job, key="http.body")
    has_payload = "json" in raw or "body" in raw
    method = (f.str("method") or ("POST" if has_payload else "GET")).upper()
    if method not in model.HTTP_METHODS:
        raise ConfigError(
            f"expected one of {' | '.join(model.HTTP_METHODS)}, got {method!r}",
            file=file,
            job=job,
            key="http.method",
        )
    headers = f.str_map("headers")
    for header, value in headers.items():
        if not HEADER_NAME.fullmatch(header):
            raise ConfigError(
                f"invalid header name {header!r}", file=file, job=job, key="http.headers"
            )
        check_placeholders(value, file, job, "http.headers")
    request: dict[str, Any] = {"method": method, "url": url, "headers": headers}
    if "json" in raw:
        try:
            text = json.dumps(raw["json"])
        except (TypeError, ValueError):
            raise ConfigError(
                "must be JSON-like (no dates or times)", file=file, job=job, key="http.json"
            ) from None
        check_placeholders(text, file, job, "http.json")
        request["json"] = raw["json"]
    if "body" in raw:
        request["body"] = f.str("body")
        check_placeholders(request["body"], file, job, "http.body")
    expect = raw.get("expect", [])
    if not isinstance(expect, list) or not all(
        isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599
        for code in expect
    ):
        raise ConfigError(
            "expected an array of HTTP status codes (100-599)",
            file=file,
            job=job,
            key="http.expect",
        )
    request["expect"] = list(expect)  # empty: any 2xx
    return request


def fill_placeholders(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with each `${VAR}` replaced from `environ`, and the values used (to mask
    them in output). Raises KeyError naming the first variable that is not set."""
    used: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(name)
        used.append(environ[name])
        return environ[name]

    return PLACEHOLDER.sub(value, text), used


def api_table(raw: Mapping[str, Any], file: str) -> model.ApiSettings | None:
    """`[api]`: `listen = "HOST:PORT"` makes `jobd run` serve the HTTP API (port 0: any)."""
    if not raw:
        return None
    check_keys(raw, API_KEYS, file=file, job=None, prefix="api.")
    f = Fields(raw, file, None, prefix="api.")
    listen = f.str("listen", required=True)
    host, port = listen_address(
        listen, file, "api.listen", example="127.0.0.1:8089", any_host=False, any_port=True
    )
    # The files themselves are read where the API is served (jobd.system.tls): a
    # command that only reads the config may run as a user who cannot read the key.
    tls_cert, tls_key = f.str("tls_cert"), f.str("tls_key")
    if bool(tls_cert) != bool(tls_key):
        missing = "tls_key" if tls_cert else "tls_cert"
        raise ConfigError(
            "tls_cert and tls_key go together: set both for HTTPS, or neither",
            file=file,
            key="api." + missing,
        )
    for key, path in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        # A detached daemon runs in /: a relative path would name another file there.
        if path is not None and not path.startswith("/"):
            raise ConfigError(
                f"expected an absolute path, got {path!r}", file=file, key="api." + key
            )
    threads = f.int("threads", 8, minimum=1)
    return model.ApiSettings(host, port, threads, tls_cert or None, tls_key or None)
