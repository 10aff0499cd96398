"""redis-py's asyncio client in the loop under test, against a server speaking the Redis protocol.

The server (``_respserver``) runs on asyncio streams in the same loop, so both
ends of every connection are the loop's. Covered: commands in RESP3 and RESP2,
pipelines with and without MULTI/EXEC, values of several MiB, a pool of 10
connections under 300 concurrent commands, pub/sub, a blocking pop woken by
another client, a command cancelled by a timeout while it waits, key expiry,
a Unix socket, TLS with verification, and a refused connection.
"""

from __future__ import annotations

import asyncio
import errno
import os

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from _respserver import RespServer
from _webutil import unused_port
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

MiB = 1 << 20


def _port(server):
    return server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("protocol", [2, 3])
def test_commands_and_pipelines(run, protocol):
    big = os.urandom(5 * MiB + 3)

    async def main():
        async with RespServer().serving(host="127.0.0.1", port=0) as server:
            async with aioredis.Redis(port=_port(server), protocol=protocol) as r:
                pong = await r.ping()
                await r.set("greeting", "héllo")
                greeting = await r.get("greeting")
                missing = await r.get("nothing here")
                await r.set("big", big)
                big_back = await r.get("big")
                async with r.pipeline(transaction=False) as pipe:
                    for _ in range(50):
                        pipe.incr("counter")
                    pipe.mget("greeting", "nothing here")
                    plain = await pipe.execute()
                async with r.pipeline(transaction=True) as pipe:
                    pipe.incr("counter").incr("counter").get("counter")
                    atomic = await pipe.execute()
                try:
                    await r.execute_command("NO-SUCH-COMMAND")
                    error = None
                except redis.exceptions.ResponseError as exc:
                    error = str(exc)
                return pong, greeting, missing, big_back == big, plain, atomic, error

    pong, greeting, missing, big_intact, plain, atomic, error = run(main)
    assert pong is True
    assert greeting == "héllo".encode()
    assert missing is None
    assert big_intact
    assert plain == [*range(1, 51), ["héllo".encode(), None]]
    assert atomic == [51, 52, b"52"]
    assert error == "unknown command 'NO-SUCH-COMMAND'"


def test_pool_under_concurrent_commands(run):
    async def main():
        resp = RespServer()
        async with resp.serving(host="127.0.0.1", port=0) as server:
            # At most 10 connections; a command waits for a free one.
            pool = aioredis.BlockingConnectionPool(port=_port(server), max_connections=10, timeout=20)
            async with aioredis.Redis.from_pool(pool) as r:  # closes the pool when done
                results = await asyncio.gather(*(r.incr("hits") for _ in range(300)))
                in_use = len(pool._available_connections) + len(pool._in_use_connections)
                return sorted(results), await r.get("hits"), in_use

    results, hits, connections = run(main)
    assert results == list(range(1, 301))
    assert hits == b"300"
    assert 1 <= connections <= 10


def test_pubsub(run):
    async def main():
        async with RespServer().serving(host="127.0.0.1", port=0) as server:
            async with aioredis.Redis(port=_port(server)) as sub, aioredis.Redis(port=_port(server)) as pub:
                pubsub = sub.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe("news", "sport")
                receivers = [await pub.publish("news", f"item {i}") for i in range(5)]
                receivers.append(await pub.publish("sport", "goal"))
                messages = []
                while len(messages) < 6:
                    message = await pubsub.get_message(timeout=5)
                    if message is not None:
                        messages.append((message["channel"], message["data"]))
                await pubsub.unsubscribe()
                after = await pub.publish("news", "nobody listens")
                await pubsub.aclose()
                return receivers, messages, after

    receivers, messages, after = run(main)
    assert receivers == [1] * 6
    assert messages == [(b"news", f"item {i}".encode()) for i in range(5)] + [(b"sport", b"goal")]
    assert after == 0


def test_blocking_pop_and_timeout(run):
    async def main():
        async with RespServer().serving(host="127.0.0.1", port=0) as server:
            async with aioredis.Redis(port=_port(server)) as r, aioredis.Redis(port=_port(server)) as other:
                waiting = asyncio.ensure_future(r.blpop(["jobs"], timeout=10))
                await asyncio.sleep(0.05)
                await other.rpush("jobs", "job-1")
                popped = await waiting

                # Cancelled while the server holds the command: the client drops that connection
                # and the next command works on a fresh one.
                try:
                    async with asyncio.timeout(0.2):
                        await r.blpop(["empty"], timeout=0)
                    timed_out = False
                except TimeoutError:
                    timed_out = True
                after = await r.ping()

                await r.set("short", "lived", px=100)
                before_expiry = await r.get("short")
                await asyncio.sleep(0.25)
                after_expiry = await r.get("short")
                return popped, timed_out, after, before_expiry, after_expiry

    popped, timed_out, after, before_expiry, after_expiry = run(main)
    assert popped in ([b"jobs", b"job-1"], (b"jobs", b"job-1"))
    assert timed_out and after is True
    assert (before_expiry, after_expiry) == (b"lived", None)


def test_unix_socket(run, tmp_path):
    path = str(tmp_path / "redis.sock")

    async def main():
        async with RespServer().serving(path=path):
            async with aioredis.Redis(unix_socket_path=path) as r:
                await r.set("k", "over a unix socket")
                return await r.get("k")

    assert run(main) == b"over a unix socket"


def test_tls_with_verification(run, server_ssl_ctx, tls_ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))

    async def main():
        async with RespServer().serving(host="127.0.0.1", port=0, ssl=server_ssl_ctx) as server:
            async with aioredis.Redis(
                host="localhost", port=_port(server), ssl=True, ssl_ca_certs=str(ca_file)
            ) as r:
                await r.set("secret", b"\x00" * 200_000)
                return len(await r.get("secret"))

    assert run(main) == 200_000


def test_refused_connection(run):
    async def main():
        no_retries = Retry(NoBackoff(), 0)
        async with aioredis.Redis(host="127.0.0.1", port=unused_port(), retry=no_retries) as r:
            try:
                await r.ping()
            except redis.exceptions.ConnectionError as exc:
                return str(exc)
        return None

    message = run(main)
    assert message is not None and message.startswith(f"Error {errno.ECONNREFUSED} connecting to 127.0.0.1:")
