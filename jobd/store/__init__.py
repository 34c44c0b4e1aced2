"""The store: SQLite or PostgreSQL, one API.

The names below load on first use (PEP 562), so that importing a peewee-free
submodule such as `jobd.store.reader` does not import peewee and psycopg2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobd.store.store import STORE_ERRORS, ApplyReport, JobRecord, Store, open_store
    from jobd.store.urls import mask_url

_EXPORTS = {
    "STORE_ERRORS": "jobd.store.store",
    "ApplyReport": "jobd.store.store",
    "JobRecord": "jobd.store.store",
    "Store": "jobd.store.store",
    "open_store": "jobd.store.store",
    "mask_url": "jobd.store.urls",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobd.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["STORE_ERRORS", "ApplyReport", "JobRecord", "Store", "mask_url", "open_store"]
