"""uvicorn serving a plain ASGI callable, started with ``await server.serve()`` in the loop under test.

Clients are asyncio streams speaking raw HTTP/1.1 (to control connections and
keep-alive exactly) and aiohttp (for streamed bodies and concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import urllib.parse

import aiohttp
import uvicorn
from _webutil import payload, split

KiB = 1024
MiB = 1024 * KiB


class App:
    """A small ASGI 3 application that records where and how it ran."""

    def __init__(self):
        self.lifespan_events: list[str] = []
        self.loop_types: set[type] = set()

    async def __call__(self, scope, receive, send):
        self.loop_types.add(type(asyncio.get_running_loop()))
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            raise RuntimeError(f"unexpected scope type {scope['type']!r}")

    async def _lifespan(self, scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.lifespan_events.append("startup")
                scope["state"]["greeting"] = "hello from lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.lifespan_events.append("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send):
        path = scope["path"]
        query = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
        client_port = str(scope["client"][1]).encode()
        if path == "/info":
            loop = asyncio.get_running_loop()
            body = json.dumps(
                {
                    "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
                    "method": scope["method"],
                    "http_version": scope["http_version"],
                    "state": scope["state"].get("greeting"),
                    "query": query,
                }
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"x-client-port", client_port)]
            await _respond(send, 200, body, headers)
        elif path == "/echo":
            body = bytearray()
            messages = 0
            more = True
            while more:
                message = await receive()
                assert message["type"] == "http.request"
                body += message.get("body", b"")
                more = message.get("more_body", False)
                messages += 1
            headers = [(b"x-client-port", client_port), (b"x-messages", str(messages).encode())]
            await _respond(send, 200, bytes(body), headers)
        elif path == "/stream":
            # No content-length: uvicorn sends the body with chunked transfer encoding.
            data = payload(int(query["size"]), seed=int(query["seed"]))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for piece in split(data, seed=5, high=64 * KiB):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await _respond(send, 404, b"not found", [])


async def _respond(send, status, body, headers):
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def uvicorn_server(app):
    """Runs ``uvicorn.Server.serve()`` as a task of the running loop; yields (server, port)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        loop="none",
        http="h11",
        ws="none",
        lifespan="on",
        log_level="warning",
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


# ---------------------------------------------------------------------------
# A minimal HTTP/1.1 client on asyncio streams
# ---------------------------------------------------------------------------


def http_request(method, target, body=b"", extra=()):
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in header_lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            parts += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"
            if size == 0:
                break
        body = bytes(parts)
    else:
        body = await reader.read()
    return int(status), headers, body


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


async def _lifespan_and_loop(app):
    async with uvicorn_server(app) as (_server, port):
        during = list(app.lifespan_events)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(http_request("GET", "/info?x=1&y=two"))
        status, headers, body = await read_response(reader)
        writer.close()
        await writer.wait_closed()
    return during, list(app.lifespan_events), status, headers, json.loads(body)


def test_lifespan_and_loop(run, loop_type):
    app = App()
    during, after, status, headers, info = run(_lifespan_and_loop, app)
    assert during == ["startup"]
    assert after == ["startup", "shutdown"]
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert info == {
        "loop": f"{loop_type.__module__}.{loop_type.__qualname__}",
        "method": "GET",
        "http_version": "1.1",
        "state": "hello from lifespan",
        "query": {"x": "1", "y": "two"},
    }
    # Lifespan and request handling both ran on the loop under test.
    assert app.loop_types == {loop_type}


async def _get_and_post(app, blob):
    async with uvicorn_server(app) as (_server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(http_request("GET", "/info"))
        get = await read_response(reader)
        writer.write(http_request("POST", "/echo", blob, ["Content-Type: application/octet-stream"]))
        post = await read_response(reader)
        writer.write(http_request("GET", "/nowhere"))
        missing = await read_response(reader)
        writer.close()
        await writer.wait_closed()
    return get, post, missing


def test_get_and_post_echo(run, loop_type):
    app = App()
    blob = payload(3 * MiB, seed=41)
    get, post, missing = run(_get_and_post, app, blob)
    assert get[0] == 200 and json.loads(get[2])["method"] == "GET"
    assert post[0] == 200
    assert post[1]["content-length"] == str(len(blob))
    assert post[2] == blob
    assert missing[0] == 404 and missing[2] == b"not found"
    assert app.loop_types == {loop_type}


async def _keep_alive(app):
    async with uvicorn_server(app) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        local_port = writer.get_extra_info("sockname")[1]
        sequential = []
        for i in range(5):
            body = f"request {i}".encode()
            writer.write(http_request("POST", "/echo", body))
            sequential.append(await read_response(reader))
        # Pipelined: three requests in one write, answered in order.
        writer.write(b"".join(http_request("POST", "/echo", f"pipelined {i}".encode()) for i in range(3)))
        pipelined = [await read_response(reader) for _ in range(3)]
        total = server.server_state.total_requests
        connections = len(server.server_state.connections)
        writer.close()
        await writer.wait_closed()
    return local_port, sequential, pipelined, total, connections


def test_keep_alive_on_one_connection(run):
    local_port, sequential, pipelined, total, connections = run(_keep_alive, App())
    assert [r[2] for r in sequential] == [f"request {i}".encode() for i in range(5)]
    assert [r[2] for r in pipelined] == [f"pipelined {i}".encode() for i in range(3)]
    for status, headers, _body in sequential + pipelined:
        assert status == 200
        assert headers["x-client-port"] == str(local_port)
        assert headers.get("connection", "keep-alive").lower() != "close"
    assert total == 8
    assert connections == 1


async def _streaming(app, size):
    async def upload():
        for piece in split(payload(size, seed=8), seed=9, high=96 * KiB):
            yield piece

    async with uvicorn_server(app) as (_server, port):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/stream", params={"size": str(size), "seed": "7"}) as resp:
                assert resp.status == 200
                te = resp.headers.get("Transfer-Encoding")
                downloaded = bytearray()
                async for chunk in resp.content.iter_chunked(16 * KiB):
                    downloaded += chunk
            async with session.post(f"{base}/echo", data=upload()) as resp:
                assert resp.status == 200
                messages = int(resp.headers["x-messages"])
                uploaded = await resp.read()
    return te, bytes(downloaded), messages, uploaded


def test_streaming_bodies(run):
    size = 4 * MiB
    te, downloaded, messages, uploaded = run(_streaming, App(), size)
    assert te == "chunked"
    assert downloaded == payload(size, seed=7)
    assert uploaded == payload(size, seed=8)
    # The chunked upload reached the app as several http.request messages.
    assert messages > 1


async def _concurrent(app, count):
    async def one(session, base, i):
        async with session.post(f"{base}/echo", data=io.BytesIO(f"n={i}".encode() * (i + 1))) as resp:
            return await resp.read()

    async with uvicorn_server(app) as (_server, port):
        connector = aiohttp.TCPConnector(limit=20)
        async with aiohttp.ClientSession(connector=connector) as session:
            return await asyncio.gather(*(one(session, f"http://127.0.0.1:{port}", i) for i in range(count)))


def test_many_concurrent_requests(run):
    count = 150
    bodies = run(_concurrent, App(), count)
    assert bodies == [f"n={i}".encode() * (i + 1) for i in range(count)]


async def _shutdown_with_idle_connection(app):
    async with uvicorn_server(app) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(http_request("GET", "/info"))
        status, _headers, _body = await read_response(reader)
        # Leave the keep-alive connection open and idle while the server stops.
        server.should_exit = True
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
    return status, rest, list(app.lifespan_events)


def test_shutdown_closes_idle_connections(run):
    status, rest, events = run(_shutdown_with_idle_connection, App())
    assert status == 200
    assert rest == b""
    assert events == ["startup", "shutdown"]


async def _http_1_0(app):
    async with uvicorn_server(app) as (_server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /info HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        # Without keep-alive the server answers and then closes: read() reaches EOF.
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
    return data


def test_http_1_0_connection_close(run):
    data = run(_http_1_0, App())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["http_version"] == "1.0"
