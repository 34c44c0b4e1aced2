"""Store URLs: which backend, where the SQLite file is, and the URL fit to print.

No driver or ORM import here: the fast read path (reader.py) needs these too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from jobd.errors import StoreUnavailable


def mask_url(url: str) -> str:
    """The URL with its password replaced, for output and logs."""
    if "://" not in url:  # a libpq key=value DSN
        return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)
    parts = urlsplit(url)
    if parts.query:
        # libpq also takes the password as a query parameter.
        query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", parts.query)
        parts = parts._replace(query=query)
        url = urlunsplit(parts)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    host = netloc[1] if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def backend_of(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise StoreUnavailable(f"unsupported store URL {mask_url(url)!r} (sqlite:/// or postgresql://)")


def sqlite_path(url: str) -> str:
    return url[len("sqlite:///") :]
