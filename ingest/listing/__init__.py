"""Listings (the ``list`` spider): pagination styles, a listing walked page by page, and with
details the listed ids fetched as pages commit."""
