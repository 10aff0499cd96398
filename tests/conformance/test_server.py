"""The Server object returned by create_server: sockets, serving state, closing and waiting."""

import asyncio
import gc
import socket
import sys
import warnings

import loopkinds
import pytest
from _netutil import Recorder, recv_until_eof, shrink_buffers, wait
from _sockutil import closing


class Collect:
    """A protocol factory that remembers every protocol it made."""

    def __init__(self):
        self.protos = []

    def __call__(self):
        proto = Recorder()
        self.protos.append(proto)
        return proto

    async def next_made(self, index=0):
        for _ in range(500):
            if len(self.protos) > index:
                return await wait(self.protos[index].made)
            await asyncio.sleep(0.01)
        raise AssertionError("no connection was accepted")


async def _serve(loop, factory=None, **kwargs):
    return await loop.create_server(factory or Recorder, "127.0.0.1", 0, **kwargs)


async def _connect(loop, address):
    client = socket.socket()
    client.setblocking(False)
    try:
        await wait(loop.sock_connect(client, address))
    except BaseException:
        client.close()
        raise
    return client


def test_server_basics(loop):
    async def main():
        server = await _serve(loop)
        try:
            assert isinstance(server, asyncio.AbstractServer)
            assert server.get_loop() is loop
            assert server.is_serving()
            sockets = server.sockets
            assert type(sockets) is tuple and len(sockets) == 1
            assert isinstance(sockets[0], asyncio.trsock.TransportSocket)
            assert sockets[0].type == socket.SOCK_STREAM
            assert sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            # Each access returns fresh wrappers over the same sockets.
            assert [s.fileno() for s in server.sockets] == [s.fileno() for s in sockets]
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_close_stops_listening(loop):
    async def main():
        server = await _serve(loop)
        address = server.sockets[0].getsockname()
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # idempotent
        await wait(server.wait_closed())
        with closing(socket.socket()) as (probe,):
            probe.setblocking(False)
            with pytest.raises(ConnectionRefusedError):
                await wait(loop.sock_connect(probe, address))

    loop.run_until_complete(main())


def test_close_keeps_existing_connections(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        with closing(await _connect(loop, server.sockets[0].getsockname())) as (client,):
            transport = await factory.next_made()
            server.close()
            await asyncio.sleep(0.01)
            assert not transport.is_closing()
            transport.write(b"still here")
            assert await wait(loop.sock_recv(client, 100)) == b"still here"
            transport.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_wait_closed_waits_for_close(loop):
    async def main():
        server = await _serve(loop)
        waiter = asyncio.ensure_future(server.wait_closed())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiter.done()
        server.close()
        assert await wait(waiter) is None

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12 made wait_closed() wait for connections")
def test_wait_closed_waits_for_connections(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        with closing(await _connect(loop, server.sockets[0].getsockname())):
            transport = await factory.next_made()
            server.close()
            waiter = asyncio.ensure_future(server.wait_closed())
            await asyncio.sleep(0.05)
            assert not waiter.done()
            transport.close()
            await wait(waiter)
            assert factory.protos[0].lost.done()

    loop.run_until_complete(main())


@pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="3.11's wait_closed() returns once the server is closed"
)
def test_wait_closed_does_not_wait_for_connections_311(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        with closing(await _connect(loop, server.sockets[0].getsockname())):
            transport = await factory.next_made()
            server.close()
            await wait(server.wait_closed(), timeout=1)
            assert not transport.is_closing()
            transport.close()

    loop.run_until_complete(main())


def test_async_with_closes(loop):
    async def main():
        async with await _serve(loop) as server:
            assert server.is_serving()
            address = server.sockets[0].getsockname()
        assert not server.is_serving()
        assert server.sockets == ()
        with closing(socket.socket()) as (probe,):
            probe.setblocking(False)
            with pytest.raises(ConnectionRefusedError):
                await wait(loop.sock_connect(probe, address))

    loop.run_until_complete(main())


def test_serve_forever_cancelled_closes(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        address = server.sockets[0].getsockname()
        forever = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="serve_forever"):
            await server.serve_forever()
        with closing(await _connect(loop, address)):
            await factory.next_made()
            factory.protos[0].transport.close()
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait(forever)
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(RuntimeError, match="closed"):
            await server.serve_forever()

    loop.run_until_complete(main())


def test_serve_forever_ends_when_closed_elsewhere(loop):
    async def main():
        server = await _serve(loop)
        forever = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        server.close()
        # close() cancels the serve_forever() future.
        with pytest.raises(asyncio.CancelledError):
            await wait(forever)
        await server.wait_closed()

    loop.run_until_complete(main())


def test_start_serving_after_start_serving_false(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory, start_serving=False)
        try:
            assert not server.is_serving()
            await server.start_serving()
            assert server.is_serving()
            with closing(await _connect(loop, server.sockets[0].getsockname())) as (client,):
                transport = await factory.next_made()
                transport.write(b"hi")
                assert await wait(loop.sock_recv(client, 10)) == b"hi"
                transport.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="close_clients() is new in 3.13")
def test_close_clients(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        address = server.sockets[0].getsockname()
        with closing(await _connect(loop, address), await _connect(loop, address)) as clients:
            transports = [await factory.next_made(0), await factory.next_made(1)]
            for transport in transports:
                transport.write(b"bye")
            server.close()
            server.close_clients()
            assert all(t.is_closing() for t in transports)
            # close() flushes: each peer reads the pending data, then EOF.
            for client in clients:
                assert await recv_until_eof(loop, client) == b"bye"
            await wait(server.wait_closed())
            assert [await p.lost for p in factory.protos] == [None, None]

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="abort_clients() is new in 3.13")
def test_abort_clients(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        with closing(await _connect(loop, server.sockets[0].getsockname())) as (client,):
            shrink_buffers(client)
            transport = await factory.next_made()
            shrink_buffers(transport.get_extra_info("socket"))
            transport.write(b"x" * (4 * 1024 * 1024))
            assert transport.get_write_buffer_size() > 0
            server.close()
            server.abort_clients()
            assert transport.is_closing()
            assert await wait(factory.protos[0].lost) is None
            assert transport.get_write_buffer_size() == 0
            await wait(server.wait_closed())
            received = 0
            try:
                while chunk := await wait(loop.sock_recv(client, 1 << 20)):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < 4 * 1024 * 1024  # the buffered data was dropped

    loop.run_until_complete(main())


def test_server_keeps_accepting(loop):
    async def main():
        factory = Collect()
        server = await _serve(loop, factory)
        address = server.sockets[0].getsockname()
        try:
            for i in range(5):
                with closing(await _connect(loop, address)) as (client,):
                    await loop.sock_sendall(client, b"n%d" % i)
                    await factory.next_made(i)
                    assert await factory.protos[i].read(2) == b"n%d" % i
                await wait(factory.protos[i].lost)
            assert [p.events for p in factory.protos] == [["made", "data", "eof", "lost"]] * 5
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_collected_connection_after_the_loop_closed_raises_nothing(loop_kind, monkeypatch):
    # A server's connection left open, collected after its loop was closed while
    # `wait_closed()` still waited for it: the transport's finalizer warns and closes its socket,
    # and must not try to wake the waiter on the closed loop.
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    accepted = []

    class Keep(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

    loop = loopkinds.loop_factory(loop_kind)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server = loop.run_until_complete(loop.create_server(Keep, "127.0.0.1", 0))
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            for _ in range(100):
                if accepted:
                    break
                loop.run_until_complete(asyncio.sleep(0.01))
            assert accepted
            server.close()
            waiting = loop.create_task(server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0.05))
            waiting._log_destroy_pending = False
            loop.close()
            del waiting, server
            accepted.clear()
            gc.collect()
        finally:
            client.close()
    assert [u.exc_value for u in unraisable] == []
    assert any("unclosed transport" in str(w.message) for w in caught)
