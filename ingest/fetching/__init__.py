"""Fetching ids: which ids, their URLs, the requests for them, which still need one, and
their answers read."""
