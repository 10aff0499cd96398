"""websockets (its asyncio implementation) serving and connecting in the loop under test.

Server and clients both run in the loop under test, over TCP and over TLS with
verification against the test CA: text and binary messages, messages of several
MiB and fragmented ones, many clients with a broadcast, ping/pong, the close
handshake's code and reason, and a client meeting a closed port.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

MiB = 1 << 20


def _port(server):
    return server.sockets[0].getsockname()[1]


async def _echo(ws):
    async for message in ws:
        await ws.send(message)


def test_echo_text_and_binary(run, loop_type):
    seen_loops = set()

    async def handler(ws):
        seen_loops.add(type(asyncio.get_running_loop()))
        await _echo(ws)

    async def main():
        async with serve(handler, "127.0.0.1", 0) as server:
            async with connect(f"ws://127.0.0.1:{_port(server)}") as ws:
                replies = []
                for message in ["hello", "", "héllo ✓", b"\x00\xff" * 100, b""]:
                    await ws.send(message)
                    replies.append(await ws.recv())
                return replies

    assert run(main) == ["hello", "", "héllo ✓", b"\x00\xff" * 100, b""]
    assert seen_loops == {loop_type}


def test_large_and_fragmented_messages(run):
    big = os.urandom(4 * MiB + 7)
    pieces = [b"frag-%d;" % i for i in range(200)]

    async def main():
        async with serve(_echo, "127.0.0.1", 0, max_size=None) as server:
            async with connect(f"ws://127.0.0.1:{_port(server)}", max_size=None) as ws:
                await ws.send(big)
                echoed_big = await ws.recv()
                await ws.send(iter(pieces))  # one message sent as 200 frames
                echoed_pieces = await ws.recv()
                return echoed_big == big, echoed_pieces

    intact, joined = run(main)
    assert intact
    assert joined == b"".join(pieces)


def test_many_clients_and_a_broadcast(run):
    clients = 20
    messages = [f"news {i}" for i in range(50)]

    async def main():
        connected = set()
        all_in = asyncio.Event()

        async def handler(ws):
            connected.add(ws)
            if len(connected) == clients:
                all_in.set()
            try:
                await ws.wait_closed()
            finally:
                connected.discard(ws)

        async def listener(port):
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                return [await ws.recv() for _ in messages]

        async with serve(handler, "127.0.0.1", 0) as server:
            listeners = [asyncio.create_task(listener(_port(server))) for _ in range(clients)]
            await asyncio.wait_for(all_in.wait(), 10)
            for message in messages:
                broadcast(connected, message)
            return await asyncio.gather(*listeners)

    assert run(main) == [messages] * clients


def test_ping_pong_and_close_code(run):
    async def main():
        closes = []

        async def handler(ws):
            try:
                await ws.recv()
            except ConnectionClosed as exc:  # 4001 is not a "normal" code: ConnectionClosedError
                closes.append((exc.rcvd.code, exc.rcvd.reason))

        async with serve(handler, "127.0.0.1", 0) as server:
            async with connect(f"ws://127.0.0.1:{_port(server)}") as ws:
                pong = await ws.ping(b"are you there")
                latency = await asyncio.wait_for(pong, 10)
                await ws.close(4001, "done here")
                client_close = (ws.close_code, ws.close_reason)
            # The server's handler finishes within the closing handshake.
            for _ in range(100):
                if closes:
                    break
                await asyncio.sleep(0.01)
        return latency, client_close, closes

    latency, client_close, closes = run(main)
    assert 0 <= latency < 10
    assert client_close == (4001, "done here")
    assert closes == [(4001, "done here")]


def test_wss_with_verification(run, server_ssl_ctx, client_ssl_ctx):
    async def main():
        async with serve(_echo, "127.0.0.1", 0, ssl=server_ssl_ctx) as server:
            async with connect(f"wss://localhost:{_port(server)}", ssl=client_ssl_ctx) as ws:
                await ws.send("over tls")
                text = await ws.recv()
                await ws.send(b"x" * MiB)
                size = len(await ws.recv())
                return text, size, ws.transport.get_extra_info("ssl_object").version()

    text, size, version = run(main)
    assert (text, size) == ("over tls", MiB)
    assert version.startswith("TLS")


def test_connect_to_a_closed_port(run):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused

        async def main():
            with pytest.raises(OSError) as err:
                async with connect(f"ws://127.0.0.1:{port}", open_timeout=10):
                    pass
            return err.value

        exc = run(main)
    assert isinstance(exc, ConnectionRefusedError)
