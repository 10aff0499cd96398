"""aiohttp's server and client talking to each other over TCP, both in the loop under test."""

from __future__ import annotations

import asyncio
import hashlib
import random

import aiohttp
import pytest
from _webutil import digest, payload, serve_app, split, unused_port
from aiohttp import web

MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


async def _json_exchange():
    async def add(request):
        body = await request.json()
        return web.json_response({"sum": sum(body["numbers"]), "echo": body, "method": request.method})

    async def hello(request):
        return web.json_response({"hello": request.query.get("name", "world")})

    app = web.Application()
    app.router.add_post("/add", add)
    app.router.add_get("/hello", hello)
    sent = {"numbers": list(range(100)), "text": "h\u00e9llo \u2603", "nested": {"a": [None, True, 1.5]}}
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/add", json=sent) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            first = await resp.json()
        async with session.get(f"{base}/hello", params={"name": "ferroloop"}) as resp:
            resp.raise_for_status()
            second = await resp.json()
        async with session.get(f"{base}/missing") as resp:
            missing = resp.status
    return first, second, missing, sent


def test_json_round_trip(run):
    first, second, missing, sent = run(_json_exchange)
    assert first == {"sum": 4950, "echo": sent, "method": "POST"}
    assert second == {"hello": "ferroloop"}
    assert missing == 404


# ---------------------------------------------------------------------------
# Streaming bodies
# ---------------------------------------------------------------------------


async def _stream_upload(data):
    async def consume(request):
        hasher = hashlib.sha256()
        size = 0
        pieces = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            hasher.update(chunk)
            size += len(chunk)
            pieces += 1
        return web.json_response(
            {
                "size": size,
                "sha256": hasher.hexdigest(),
                "pieces": pieces,
                "te": request.headers.get("Transfer-Encoding"),
            }
        )

    async def body():
        for piece in split(data, seed=1):
            yield piece
            await asyncio.sleep(0)

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_post("/upload", consume)
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/upload", data=body()) as resp:
            assert resp.status == 200
            return await resp.json()


def test_streaming_request_body(run):
    data = payload(6 * MiB, seed=11)
    result = run(_stream_upload, data)
    assert result["te"] == "chunked"
    assert result["size"] == len(data)
    assert result["sha256"] == digest(data)
    assert result["pieces"] > 1


async def _stream_download(data):
    async def produce(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in split(data, seed=2):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/download", produce)
    received = bytearray()
    reads = 0
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        async with session.get(f"{base}/download") as resp:
            assert resp.status == 200
            te = resp.headers.get("Transfer-Encoding")
            async for chunk in resp.content.iter_chunked(32 * 1024):
                received += chunk
                reads += 1
    return bytes(received), te, reads


def test_streaming_response_body(run):
    data = payload(6 * MiB, seed=12)
    received, te, reads = run(_stream_download, data)
    assert te == "chunked"
    assert len(received) == len(data)
    assert received == data
    assert reads > 1


async def _stream_echo(data):
    # The handler answers while the request body is still arriving, so both
    # directions are in flight at once and flow control has to work both ways.
    async def echo(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        async for chunk in request.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def body():
        for piece in split(data, seed=3, high=128 * 1024):
            yield piece

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_post("/echo", echo)
    received = bytearray()
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/echo", data=body()) as resp:
            async for chunk in resp.content.iter_any():
                received += chunk
    return bytes(received)


def test_streaming_full_duplex_echo(run):
    data = payload(8 * MiB, seed=13)
    received = run(_stream_echo, data)
    assert len(received) == len(data)
    assert received == data


# ---------------------------------------------------------------------------
# Concurrency over a pooled session
# ---------------------------------------------------------------------------


async def _many_requests(count, limit):
    peers = set()
    in_flight = 0
    max_in_flight = 0

    async def item(request):
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        try:
            peers.add(request.transport.get_extra_info("peername"))
            index = int(request.match_info["index"])
            await asyncio.sleep(random.random() * 0.005)
            return web.json_response({"index": index, "blob": "x" * (index * 37)})
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_get("/item/{index}", item)

    async def fetch(session, base, index):
        async with session.get(f"{base}/item/{index}") as resp:
            assert resp.status == 200
            return await resp.json()

    connector = aiohttp.TCPConnector(limit=limit)
    async with serve_app(app) as base, aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(fetch(session, base, i) for i in range(count)))
    return results, peers, max_in_flight


def test_many_concurrent_requests(run):
    count, limit = 200, 16
    results, peers, max_in_flight = run(_many_requests, count, limit)
    assert [r["index"] for r in results] == list(range(count))
    assert all(r["blob"] == "x" * (r["index"] * 37) for r in results)
    # Keep-alive: the pooled connections were reused, never more than the limit.
    assert 1 <= len(peers) <= limit
    assert 1 < max_in_flight <= limit


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


async def _connect_refused(port):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.get(f"http://127.0.0.1:{port}/"):
                pass
    return info.value


def test_connection_refused(run):
    err = run(_connect_refused, unused_port())
    assert type(err) is aiohttp.ClientConnectorError
    assert isinstance(err.os_error, ConnectionRefusedError)


async def _server_drops_connection():
    async def rude(request):
        request.transport.close()
        return web.Response(text="never sent")

    app = web.Application()
    app.router.add_get("/rude", rude)
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.get(f"{base}/rude") as resp:
                await resp.read()


def test_server_drops_connection(run):
    run(_server_drops_connection)


# ---------------------------------------------------------------------------
# WebSocket
# ---------------------------------------------------------------------------


async def _websocket_echo(blob):
    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{base}/ws", max_msg_size=16 * MiB) as ws:
            await ws.send_str("hello")
            text = await ws.receive_str()
            await ws.send_bytes(blob)
            binary = await ws.receive_bytes()
            await ws.send_json({"k": [1, 2]})
            as_json = await ws.receive_str()
            replies = []
            for i in range(50):
                await ws.send_str(f"m{i}")
            for _ in range(50):
                replies.append(await ws.receive_str())
            await ws.close()
            return text, binary, as_json, replies, ws.closed, ws.close_code


def test_websocket_echo(run):
    blob = payload(2 * MiB, seed=21)
    text, binary, as_json, replies, closed, code = run(_websocket_echo, blob)
    assert text == "HELLO"
    assert binary == blob[::-1]
    assert as_json == '{"K": [1, 2]}'
    assert replies == [f"M{i}" for i in range(50)]
    assert closed
    assert code == aiohttp.WSCloseCode.OK


# ---------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------


async def _shutdown_with_open_connections():
    sockets = set()

    async def on_shutdown(app):
        for ws in set(sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"bye")

    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        try:
            async for _msg in ws:
                pass
        finally:
            sockets.discard(ws)
        return ws

    async def plain(request):
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/", plain)
    app.on_shutdown.append(on_shutdown)

    async with aiohttp.ClientSession() as session:
        async with serve_app(app) as base:
            # An idle keep-alive connection in the pool and a live websocket.
            async with session.get(f"{base}/") as resp:
                assert await resp.text() == "ok"
            ws = await session.ws_connect(f"{base}/ws")
            while not sockets:
                await asyncio.sleep(0.01)
            # The client keeps reading, so it sees the server's close frame and answers it.
            receiver = asyncio.create_task(ws.receive())
        # The server is gone: the websocket was closed by it ...
        msg = await receiver
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (aiohttp.WSCloseCode.GOING_AWAY, "bye")
        await ws.close()
        close_code = ws.close_code
        # ... and nothing listens on the port any more.
        port = int(base.rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    return close_code


def test_clean_shutdown(run):
    close_code = run(_shutdown_with_open_connections)
    assert close_code == aiohttp.WSCloseCode.GOING_AWAY
