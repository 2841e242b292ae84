"""Packaging for scrapyd-deploy: an egg of the ``ingest`` package and its bundled schema."""

from setuptools import find_packages, setup

setup(
    name="ingest",
    version="1.0",
    packages=find_packages(include=["ingest", "ingest.*"]),
    package_data={"ingest": ["schemas/*.json"]},
    entry_points={"scrapy": ["settings = ingest.settings"]},
    zip_safe=False,
)
