"""Database URLs (the store's and `sql` jobs'): their syntax, checked in one place,
and their passwords, masked for output.

Pure, and no driver is imported: a URL that libpq would reject is refused here
first, in one line without its password. libpq's own message for a malformed
URL quotes the URL whole, password included ("invalid dsn: ... S3cret ..."),
so it must never be the first to see one.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from jobd.core.masking import MASK
from jobd.errors import ConfigError

POSTGRES_PREFIXES = ("postgresql://", "postgres://")
SQLITE_PREFIX = "sqlite:///"
# Not quoting the port: with a '/' in the password, libpq (and this check) read
# part of the password as the port.
PORT_PROBLEM = "a port that is not a number from 1 to 65535"

_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
_DSN_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)(password)=[^&#]*")
_QUERY_KEY = re.compile(r"[a-z_]+")  # libpq's keywords; it quotes an unknown one whole


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_PREFIXES)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for output and logs.

    Never raises, even for a URL no parser accepts: that is when it is shown.
    Everything from the first ':' after `scheme://` to the last '@' is masked:
    parsers disagree on where a malformed user:password part ends (libpq at the
    first '@', others at the last), and masking a little too much is harmless.
    """
    if "://" not in url:  # a libpq key=value DSN
        return _DSN_PASSWORD.sub(rf"\g<1>{MASK}", url)
    scheme, _, rest = url.partition("://")
    colon, at = rest.find(":"), rest.rfind("@")
    if colon != -1 and at > colon:
        rest = f"{rest[: colon + 1]}{MASK}{rest[at:]}"
    path, mark, query = rest.partition("?")
    if mark:
        # libpq also takes the password as a query parameter.
        rest = path + mark + _QUERY_PASSWORD.sub(rf"\g<1>\g<2>={MASK}", query)
    return f"{scheme}://{rest}"


def url_passwords(url: str) -> list[str]:
    """The passwords a URL or DSN holds, as written and percent-decoded, to be
    masked wherever they might show (a driver's error, a job's output).

    For a URL that does not parse, the whole span mask_url() masks counts.
    """
    if "://" not in url:
        found = [m.group(2).strip("'") for m in _DSN_PASSWORD.finditer(url)]
    else:
        rest = url.split("://", 1)[1]
        found = []
        if is_postgres(url) and postgres_url_problem(url) is None:
            userinfo = rest.partition("/")[0].rpartition("@")[0]
            if ":" in userinfo:
                found.append(userinfo.split(":", 1)[1])
        else:
            colon, at = rest.find(":"), rest.rfind("@")
            if colon != -1 and at > colon:
                found.append(rest[colon + 1 : at])
        query = rest.partition("?")[2]
        found += [
            value
            for key, _, value in (param.partition("=") for param in query.split("&"))
            if key.lower() == "password"
        ]
    return [value for value in {*found, *(unquote(v) for v in found)} if value]


def postgres_url_problem(url: str, placeholders: bool = False) -> str | None:
    """What libpq would reject in this postgresql:// URL, or None.

    With `placeholders`, `${VAR}` parts (filled in at run time) are taken as
    valid wherever they are.
    """
    text = _PLACEHOLDER.sub("1", url) if placeholders else url
    if _PERCENT.search(text):
        return "a '%' not followed by two hex digits"
    rest = text.split("://", 1)[1]
    # As libpq reads it: user:password@ is looked for before the first '/', and
    # the hosts end at the first '/' or '?' after it.
    head = rest.partition("/")[0]
    if head.count("@") > 1:
        # libpq splits at the first '@', other parsers at the last: only one
        # reading is safe to check, and to mask.
        return "more than one '@' (write an '@' in the user or password as %40)"
    after = rest[head.find("@") + 1 :]
    stops = [i for i in (after.find("/"), after.find("?")) if i != -1]
    hosts = after[: min(stops) if stops else len(after)]
    for host in hosts.split(",") if hosts else []:
        problem = _host_problem(host)
        if problem:
            return problem
    query = after.partition("?")[2]
    for param in query.split("&") if query else []:
        # libpq quotes a malformed parameter whole in its error, whatever it holds.
        if param.count("=") != 1 or param.startswith("="):
            return "a query parameter that is not key=value"
        key, value = param.split("=")
        if not _QUERY_KEY.fullmatch(key):
            return "a query parameter name that is not a libpq keyword"
        if key == "port":
            for port in value.split(","):
                if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                    return PORT_PROBLEM
    return None


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return "an IPv6 address without its closing ']'"
        if end == 1:
            return "an empty IPv6 address, []"
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
        return PORT_PROBLEM
    return None


def store_url_problem(url: str) -> str | None:
    """What is wrong with this store URL, or None. The message never holds the URL."""
    if url.startswith(SQLITE_PREFIX):
        return None if url[len(SQLITE_PREFIX) :] else "no path after sqlite:///"
    if is_postgres(url):
        return postgres_url_problem(url)
    return "expected sqlite:////absolute/path.db or postgresql://user@host/db"


def check_store_url(url: str, file: str, key: str | None) -> None:
    """A store URL from `file` (or "--store", or "environment"): a one-line config
    error without its password when it is malformed."""
    problem = store_url_problem(url)
    if problem is not None:
        raise ConfigError(f"invalid store URL {mask_url(url)!r}: {problem}", file=file, key=key)


def database_url_problem(url: str) -> str | None:
    """What is wrong with an `sql` job's database URL (`${VAR}` allowed), or None."""
    if is_postgres(url):
        return postgres_url_problem(url, placeholders=True)
    if url.startswith(SQLITE_PREFIX + "/") and len(url) > len(SQLITE_PREFIX) + 1:
        return None
    return "expected postgresql://user@host/db or sqlite:////absolute/path.db"
