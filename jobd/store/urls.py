"""Store URLs: which backend, where the SQLite file is, and the URL fit to print.

No driver or ORM import here: the fast read path (reader.py) needs these too.
The syntax itself is checked in jobd.core.urls, the one place for it.
"""

from __future__ import annotations

from jobd.core.urls import POSTGRES_PREFIXES, is_postgres, mask_url, store_url_problem
from jobd.errors import ConfigError

__all__ = ["backend_of", "mask_url", "sqlite_path"]


def backend_of(url: str) -> str:
    """The backend, "sqlite" or "postgresql"; a malformed URL is a config error (exit 2).

    Every way into a store passes here, so a malformed URL, wherever it came
    from, is refused before a driver can quote it, password and all, in an error.
    """
    if not url.startswith(("sqlite:///", *POSTGRES_PREFIXES)):
        raise ConfigError(f"unsupported store URL {mask_url(url)!r} (sqlite:/// or postgresql://)")
    problem = store_url_problem(url)
    if problem is not None:
        raise ConfigError(f"invalid store URL {mask_url(url)!r}: {problem}")
    return "postgresql" if is_postgres(url) else "sqlite"


def sqlite_path(url: str) -> str:
    return url[len("sqlite:///") :]
