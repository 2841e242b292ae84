"""The command line: `python -m mockapi [flags]` serves until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from mockapi.flags import parse_args, settings_from
from mockapi.server import create_app
from mockapi.state import MockState

# The HTTP parser's own cap on a request line, far above any --max-url, so that it is
# --max-url (414) and not the parser (an unrecorded 400) that refuses long URLs.
MAX_LINE = 1 << 20


async def serve(args: argparse.Namespace) -> None:
    state = MockState(settings_from(args))
    access_log = logging.getLogger("aiohttp.access") if args.access_log else None
    # Requests still sleeping out a long latency must not hold up a stop for a minute.
    runner = web.AppRunner(
        create_app(state),
        access_log=access_log,
        shutdown_timeout=1.0,
        max_line_size=max(MAX_LINE, (args.max_url or 0) + 1024),
    )
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    host, port = runner.addresses[0][:2]

    async def down(seconds: float) -> None:
        """Stop listening and drop every connection for ``seconds``: an API gone away."""
        nonlocal site
        await asyncio.sleep(0.05)  # the answer to the request that asked for it goes first
        await site.stop()
        assert runner.server is not None
        for connection in runner.server.connections:
            connection.force_close()
        await asyncio.sleep(seconds)
        site = web.TCPSite(runner, host, port)
        await site.start()

    state.go_down = down
    host = f"[{host}]" if ":" in host else host
    print(f"mockapi listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))
