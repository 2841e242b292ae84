"""Packaging for scrapyd-deploy: an egg of the ``ingest`` package, its schema and its Lua."""

from setuptools import find_packages, setup

setup(
    name="ingest",
    version="1.0",
    packages=find_packages(include=["ingest", "ingest.*"]),
    package_data={"ingest": ["schemas/*.json", "ratelimit/backends/*.lua"]},
    entry_points={"scrapy": ["settings = ingest.settings"]},
    # True to the code (ingest.settings builds a file path from __file__), though scrapyd
    # ignores it: it imports the project from the zipped .egg all the same.
    zip_safe=False,
)
