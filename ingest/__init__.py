"""ingest: fetch JSON items by id from a rate-limited API into a database, with Scrapy."""
