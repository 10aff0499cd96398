"""httpx's AsyncClient, and anyio (its asyncio backend), in the loop under test.

httpx reaches the loop through anyio and httpcore rather than through asyncio's
streams, so these cover a second way libraries use a loop: an HTTP client against
an aiohttp server (JSON, a streamed download, many requests over one pool, HTTPS
with verification, a refused connection), and anyio's own TCP streams, task
groups, cancel scopes, worker threads and subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading

import anyio
import httpx
from _webutil import digest, payload, serve_app, unused_port
from aiohttp import web

MiB = 1 << 20


def _app():
    blob = payload(3 * MiB, seed=7)

    async def echo_json(request):
        body = await request.json()
        return web.json_response({"got": body, "method": request.method})

    async def download(request):
        response = web.StreamResponse()
        response.content_length = len(blob)
        await response.prepare(request)
        for start in range(0, len(blob), 64 * 1024):
            await response.write(blob[start : start + 64 * 1024])
        return response

    async def number(request):
        return web.Response(text=request.match_info["n"])

    app = web.Application()
    app.router.add_post("/json", echo_json)
    app.router.add_get("/download", download)
    app.router.add_get("/n/{n}", number)
    return app, blob


def test_json_and_streamed_download(run):
    async def main():
        app, blob = _app()
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as client:
            reply = await client.post("/json", json={"a": [1, 2, 3], "b": "ü"})
            received = bytearray()
            async with client.stream("GET", "/download") as response:
                async for chunk in response.aiter_bytes():
                    received += chunk
            return reply.status_code, reply.json(), digest(bytes(received)) == digest(blob)

    status, body, intact = run(main)
    assert status == 200
    assert body == {"got": {"a": [1, 2, 3], "b": "ü"}, "method": "POST"}
    assert intact


def test_many_requests_over_one_pool(run):
    async def main():
        app, _ = _app()
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base, limits=limits) as client:

            async def fetch(n):
                response = await client.get(f"/n/{n}")
                return int(response.text)

            return await asyncio.gather(*(fetch(n) for n in range(200)))

    assert run(main) == list(range(200))


def test_https_with_verification(run, server_ssl_ctx, client_ssl_ctx):
    async def main():
        app, _ = _app()
        async with serve_app(app, ssl_context=server_ssl_ctx, host="127.0.0.1") as base:
            url = base.replace("127.0.0.1", "localhost")
            async with httpx.AsyncClient(verify=client_ssl_ctx) as client:
                reply = await client.post(f"{url}/json", json=[1])
            async with httpx.AsyncClient(verify=ssl.create_default_context()) as untrusting:
                try:
                    await untrusting.post(f"{url}/json", json=[1])
                except httpx.ConnectError as exc:
                    refused = exc
                else:
                    refused = None
        # The server's side of the refused handshake ends in the task that accepted it.
        for _ in range(1000):
            accepting = [t for t in asyncio.all_tasks() if "_accept_connection" in t.get_coro().__qualname__]
            if all(t.done() for t in accepting):
                break
            await asyncio.sleep(0.01)
        return reply.json(), refused

    # In debug mode both loops report the server side's failed handshake; nothing else may be.
    body, refused = run(main, allow_handler_calls=True)
    messages = {ctx["message"] for ctx in run.handler_calls}
    assert messages <= {"Error on transport creation for incoming connection"}
    assert body == {"got": [1], "method": "POST"}
    assert refused is not None and "CERTIFICATE_VERIFY_FAILED" in str(refused)


def test_refused_connection(run):
    port = unused_port()

    async def main():
        async with httpx.AsyncClient() as client:
            try:
                await client.get(f"http://127.0.0.1:{port}/")
            except httpx.ConnectError as exc:
                return exc
        return None

    assert isinstance(run(main), httpx.ConnectError)


def test_anyio_tcp_echo_and_task_group(run):
    async def main():
        received = []

        async def serve_one(stream):
            async with stream:
                async for chunk in stream:
                    await stream.send(chunk.upper())

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve_one)
            for word in (b"alpha", b"beta", b"gamma"):
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(word)
                    received.append(await client.receive())
            tg.cancel_scope.cancel()
        await listener.aclose()
        return received

    assert run(main) == [b"ALPHA", b"BETA", b"GAMMA"]


def test_anyio_cancel_scopes_threads_and_processes(run):
    async def main():
        with anyio.move_on_after(0.05) as scope:
            await anyio.sleep(10)
        worker = await anyio.to_thread.run_sync(lambda: threading.current_thread().name)
        result = await anyio.run_process(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        with anyio.fail_after(5):
            await anyio.sleep(0)
        return scope.cancelled_caught, worker, result.returncode, result.stdout, result.stderr

    caught, worker, code, out, err = run(main)
    assert caught
    assert worker != threading.main_thread().name
    assert (code, out, err) == (3, b"out\n", b"err\n")


def test_json_body_types(run):
    # Bodies of several shapes through httpx and aiohttp's JSON handling.
    values = [None, 0, -1.5, "", "x" * 100_000, [], {"nested": {"list": list(range(1000))}}]

    async def main():
        app, _ = _app()
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as client:
            out = []
            for value in values:
                reply = await client.post("/json", content=json.dumps(value).encode())
                out.append(reply.json()["got"])
            return out

    assert run(main) == values


def test_anyio_finds_the_task_run_until_complete_drives(loop_factory):
    # anyio ties its worker threads to the root task, which it recognises by the stdlib's
    # run_until_complete callback among a task's done callbacks (its find_root_task).
    from anyio._backends._asyncio import find_root_task

    async def child():
        return find_root_task()

    async def main():
        return asyncio.current_task(), await asyncio.create_task(child())

    loop = loop_factory()
    try:
        task, root = loop.run_until_complete(main())
    finally:
        loop.close()
    assert root is task
