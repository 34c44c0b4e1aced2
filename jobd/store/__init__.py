"""The store: SQLite or PostgreSQL, one API."""

from jobd.store.connect import mask_url
from jobd.store.store import STORE_ERRORS, ApplyReport, JobRecord, Store, open_store

__all__ = ["STORE_ERRORS", "ApplyReport", "JobRecord", "Store", "mask_url", "open_store"]
