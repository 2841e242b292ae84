"""The database backends behind `ingest.storage.open_store`."""
