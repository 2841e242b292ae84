"""A rate-limited mock REST API for the demo, the tests and the benchmarks: python -m mockapi."""
