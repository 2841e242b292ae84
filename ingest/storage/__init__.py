"""Where outcomes are kept: `open_store` picks the database a DATABASE_URL names."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ingest.config.masking import mask_url
from ingest.storage.base import StorageError, StorageRefused, StorageUnavailable, Store

__all__ = ["StorageError", "StorageRefused", "StorageUnavailable", "Store", "open_store"]


def open_store(url: str) -> Store:
    """The store for a DATABASE_URL; only parses it (`connect()` does the I/O).

    A backend, and its driver, is imported only when a URL names it.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme == "sqlite":
        from ingest.storage.sqlite import SQLiteStore

        prefix = "sqlite:///"
        path = url[len(prefix) :].split("?", 1)[0] if url.lower().startswith(prefix) else ""
        if not path:
            raise ValueError(
                f"DATABASE_URL has no SQLite file path: {mask_url(url)!r} "
                "(use sqlite:///relative.db or sqlite:////absolute/path.db)"
            )
        return SQLiteStore(os.path.abspath(path), url=mask_url(url))
    if scheme in ("postgresql", "postgres"):
        from ingest.storage.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"DATABASE_URL has an unknown scheme: {mask_url(url)!r} "
        "(use sqlite:///path or postgresql://…)"
    )
