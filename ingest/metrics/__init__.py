"""Prometheus metrics of a crawl: the families, and the endpoint that serves them."""
