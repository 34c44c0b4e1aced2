"""Database URLs (the store's and `sql` jobs'): their syntax, checked in one place,
and their passwords, masked for output.

Pure, and no driver is imported: a URL that libpq would reject is refused here
first, in one line without its password. libpq's own message for a malformed
URL quotes the URL whole, password included ("invalid dsn: ... S3cret ..."),
so it must never be the first to see one.
"""

from __future__ import annotations

import re

from jobd.errors import ConfigError

POSTGRES_PREFIXES = ("postgresql://", "postgres://")
SQLITE_PREFIX = "sqlite:///"
MASK = "***"

_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
_DSN_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)(password)=[^&#]*")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_PREFIXES)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for output and logs.

    Never raises, even for a URL no parser accepts: that is when it is shown.
    """
    if "://" not in url:  # a libpq key=value DSN
        return _DSN_PASSWORD.sub(rf"\g<1>{MASK}", url)
    scheme, _, rest = url.partition("://")
    at = _userinfo_end(rest)
    if at != -1 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}{rest[at:]}"
    path, mark, query = rest.partition("?")
    if mark:
        # libpq also takes the password as a query parameter.
        rest = path + mark + _QUERY_PASSWORD.sub(rf"\g<1>\g<2>={MASK}", query)
    return f"{scheme}://{rest}"


def _userinfo_end(rest: str) -> int:
    """Where the user:password part after `scheme://` ends (its '@'), or -1.

    The last '@' before any query: a password with an unencoded '/' or '@' in it
    must be masked whole, even though no parser would read it as meant.
    """
    stops = [i for i in (rest.find("?"), rest.find("#")) if i != -1]
    return rest.rfind("@", 0, min(stops) if stops else len(rest))


def postgres_url_problem(url: str, placeholders: bool = False) -> str | None:
    """What libpq would reject in this postgresql:// URL, or None.

    With `placeholders`, `${VAR}` parts (filled in at run time) are taken as
    valid wherever they are.
    """
    text = _PLACEHOLDER.sub("1", url) if placeholders else url
    if _PERCENT.search(text):
        return "a '%' not followed by two hex digits"
    rest = text.split("://", 1)[1]
    stops = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i != -1]
    netloc = rest[: min(stops) if stops else len(rest)]
    hosts = netloc.rpartition("@")[2]
    for host in hosts.split(",") if hosts else []:
        problem = _host_problem(host)
        if problem:
            return problem
    return None


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return "an IPv6 address without its closing ']'"
        after = host[end + 1 :]
        if after and not after.startswith(":"):
            return "unexpected text after the IPv6 address"
        port = after[1:] if after else ""
    else:
        if "]" in host:
            return "a ']' without its opening '['"
        if host.count(":") > 1:
            return "an IPv6 address must be written in [brackets]"
        port = host.partition(":")[2]
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 1 to 65535"
    return None


def store_url_problem(url: str) -> str | None:
    """What is wrong with this store URL, or None. The message never holds the URL."""
    if url.startswith(SQLITE_PREFIX):
        return None if url[len(SQLITE_PREFIX) :] else "no path after sqlite:///"
    if is_postgres(url):
        return postgres_url_problem(url)
    return "expected sqlite:////absolute/path.db or postgresql://user@host/db"


def database_url_problem(url: str) -> str | None:
    """What is wrong with an `sql` job's database URL (`${VAR}` allowed), or None."""
    if is_postgres(url):
        return postgres_url_problem(url, placeholders=True)
    if url.startswith(SQLITE_PREFIX + "/") and len(url) > len(SQLITE_PREFIX) + 1:
        return None
    return "expected postgresql://user@host/db or sqlite:////absolute/path.db"


def check_store_url(url: str, file: str, key: str | None) -> None:
    """A store URL from `file` (or "--store", or "environment"), in one line without
    its password when it is malformed."""
    problem = store_url_problem(url)
    if problem is not None:
        raise ConfigError(f"invalid store URL {mask_url(url)!r}: {problem}", file=file, key=key)
