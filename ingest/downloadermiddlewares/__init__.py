"""Downloader middlewares of ingest: retries, the token, skipping what is done, outages."""
