"""The aiohttp application: requests to /items read into Calls, and the /_mock/ endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.typedefs import Handler

from mockapi.calls import BadRequest, Call, body_ids, fingerprint, query_ids, text_id
from mockapi.state import Injection, MockState

Sleep = Callable[[float], Awaitable[object]]


def read_call(
    request: web.Request, kind: str, ids: tuple[str, ...], problem: str | None = None
) -> Call:
    """What the state needs of an aiohttp request; the raw path as received, undecoded."""
    headers = request.headers
    return Call(
        kind,
        ids,
        path=request.path,
        raw_path=request.raw_path,
        query=request.rel_url.raw_query_string,
        params={name: request.query[name] for name in request.query},
        origin=f"{request.scheme}://{request.host}",
        authorization=headers.get("Authorization"),
        agent=headers.get("User-Agent"),
        if_none_match=headers.get("If-None-Match"),
        if_modified_since=headers.get("If-Modified-Since"),
        problem=problem,
    )


def create_app(state: MockState, sleep: Sleep = asyncio.sleep) -> web.Application:
    """/items/{id}, /items (a listing, or a batch with ?ids=), POST /items/batch, /_mock/."""

    async def respond(call: Call) -> web.Response:
        answer = state.handle(call)
        if state.settings.latency + answer.hold > 0:
            await sleep(state.settings.latency + answer.hold)
        return web.Response(
            status=answer.status,
            body=answer.body or None,
            content_type=answer.content_type,
            headers=answer.headers,
        )

    async def item(request: web.Request) -> web.Response:
        # The router matches the decoded path; an id is one raw segment, decoded once.
        remainder = request.rel_url.raw_path.removeprefix("/items/")
        ids = () if "/" in remainder else (unquote(remainder),)
        return await respond(read_call(request, "item", ids))

    async def listing_or_batch(request: web.Request) -> web.Response:
        ids = query_ids(request.rel_url.raw_query_string)
        if ids is None:
            return await respond(read_call(request, "list", ()))
        return await respond(read_call(request, "batch", ids))

    async def batch(request: web.Request) -> web.Response:
        try:
            ids = body_ids(await request.read())
        except BadRequest as exc:
            return await respond(read_call(request, "batch", (), problem=str(exc)))
        return await respond(read_call(request, "batch", ids))

    app = web.Application()
    app.router.add_get("/items", listing_or_batch)
    app.router.add_post("/items/batch", batch)
    app.router.add_get("/items/{id:.*}", item)
    app.add_subapp("/_mock", control_app(state))
    return app


def control_app(state: MockState) -> web.Application:
    """The endpoints tests drive the server with; their requests are never recorded."""
    tasks: set[asyncio.Task[None]] = set()  # outages under way, kept from the collector

    async def requests(request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.isdecimal():
            raise ValueError(f"since must be an index >= 0, got {since!r}")
        return web.json_response({"requests": state.record[int(since) :]})

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def inject(request: web.Request) -> web.Response:
        state.injections.append(Injection(**await json_object(request)))
        return web.json_response({"pending": len(state.injections)})

    async def configure(request: web.Request) -> web.Response:
        state.configure(await json_object(request))
        s = state.settings
        return web.json_response(
            {"latency": s.latency, "error_rate": s.error_rate, "not_json_page": s.not_json_page}
        )

    async def revoke(request: web.Request) -> web.Response:
        token = (await json_object(request)).get("token")
        if not isinstance(token, str):
            raise ValueError('the body must look like {"token": "..."}')
        state.accounts.revoke(token)
        return web.json_response({"revoked": fingerprint(token)})

    async def change(request: web.Request) -> web.Response:
        ids = (await json_object(request)).get("ids")
        if not isinstance(ids, list):
            raise ValueError(f'the body must look like {{"ids": [...]}}, got ids={ids!r}')
        return web.json_response(state.change([text_id(value) for value in ids]))

    async def items(request: web.Request) -> web.Response:
        return web.json_response(state.changed_items())

    async def down(request: web.Request) -> web.Response:
        seconds = (await json_object(request)).get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise ValueError(f'the body must look like {{"seconds": 30}}, got {seconds!r}')
        if not 0 < seconds <= 3600:
            raise ValueError(f"seconds must be in (0, 3600], got {seconds!r}")
        if state.go_down is None:
            raise ValueError("this server cannot go down")
        tasks.add(task := asyncio.ensure_future(state.go_down(seconds)))
        task.add_done_callback(tasks.discard)
        return web.json_response({"down": seconds})

    @web.middleware
    async def bad_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (TypeError, ValueError, BadRequest) as exc:
            raise web.HTTPBadRequest(text=f"{request.path}: {exc}") from exc

    control = web.Application(middlewares=[bad_request])
    control.router.add_get("/requests", requests)
    control.router.add_post("/reset", reset)
    control.router.add_post("/inject", inject)
    control.router.add_post("/config", configure)
    control.router.add_post("/revoke", revoke)
    control.router.add_post("/change", change)
    control.router.add_get("/items", items)
    control.router.add_post("/down", down)
    return control


async def json_object(request: web.Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, got {body!r}")
    return body
