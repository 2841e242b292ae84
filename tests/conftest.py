"""Fixtures shared by the test suite: real servers on 127.0.0.1."""

pytest_plugins = [
    "tests.support.mockapi",
    "tests.support.postgres",
    "tests.support.redis",
    "tests.support.scrapyd",
]
