"""The HTTP endpoint Prometheus scrapes: /metrics of one registry, served from the reactor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from twisted.web.server import Request


class MetricsPage(Resource):
    """The registry in Prometheus's text format. Rendered in the reactor's thread, as
    everything else that reads the crawl's stats, so that nothing reads them while
    they change (prometheus_client's own server would answer from a thread)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        if request.path not in (b"/metrics", b"/"):
            request.setResponseCode(404)
            return b"Not found: the metrics are at /metrics\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """No access log: a scrape every few seconds would bury the crawl's own lines."""


def listen(registry: CollectorRegistry, port: int, bind: str) -> Any:
    """Serve ``registry`` on ``bind``:``port`` (0: a free port the OS picks); returns the
    listening port (``getHost()``, ``stopListening()``)."""
    site = _QuietSite(MetricsPage(registry))
    site.noisy = False
    tcp: Any = reactor
    return tcp.listenTCP(port, site, interface=bind)
