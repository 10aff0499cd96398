"""sock_recv / sock_recv_into / sock_recvfrom(_into) / sock_sendall / sock_sendto / sock_connect /
sock_accept: results, errors (exact OSError subclass and errno), cancellation, fd registrations."""

import asyncio
import errno
import gc
import os
import socket
import ssl
import struct
from unittest import mock

import pytest
from _sockutil import closing, free_port, listener, open_fds, tcp_pair


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        yield a, b


def _settle(turns=3):
    """Let a few loop iterations run (cancellation clean-up runs from done-callbacks)."""

    async def settle():
        for _ in range(turns):
            await asyncio.sleep(0)

    return settle()


def _run_to_completion_without_suspending(coro):
    """Drive a coroutine one step: it must finish without ever waiting for the loop."""
    with pytest.raises(StopIteration) as info:
        coro.send(None)
    return info.value.value


# -- data transfer -----------------------------------------------------------------------------


def test_echo_over_socketpair(loop, pair):
    a, b = pair

    async def main():
        reader = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        assert not reader.done()
        await loop.sock_sendall(a, b"ping")
        assert await reader == b"ping"
        await loop.sock_sendall(b, b"pong")
        assert await loop.sock_recv(a, 100) == b"pong"

    loop.run_until_complete(main())


def test_ready_socket_completes_without_a_loop_turn(loop, pair):
    a, b = pair

    async def main():
        assert _run_to_completion_without_suspending(loop.sock_sendall(a, b"abcdef")) is None
        assert _run_to_completion_without_suspending(loop.sock_recv(b, 3)) == b"abc"
        buf = bytearray(10)
        assert _run_to_completion_without_suspending(loop.sock_recv_into(b, buf)) == 3
        assert buf[:3] == b"def"
        with listener() as lsock, socket.create_connection(lsock.getsockname()) as client:
            await asyncio.sleep(0.05)  # let the handshake finish: the connection is queued
            conn, addr = _run_to_completion_without_suspending(loop.sock_accept(lsock))
            with conn:
                assert addr == client.getsockname()
                assert conn.gettimeout() == 0

    loop.run_until_complete(main())


def test_recv_into_memoryview(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(b"." * 16)
        with memoryview(buf) as view:
            pending = asyncio.ensure_future(loop.sock_recv_into(b, view[4:12]))
            await asyncio.sleep(0)
            assert not pending.done()
            a.send(b"0123456789")
            assert await pending == 8
            assert bytes(buf) == b"....01234567...."
            # The rest is already there: no wait this time.
            assert await loop.sock_recv_into(b, view[:4]) == 2
        assert bytes(buf[:2]) == b"89"

    loop.run_until_complete(main())


def test_recv_returns_empty_at_eof(loop, pair):
    a, b = pair

    async def main():
        pending = asyncio.ensure_future(loop.sock_recv(b, 10))
        await asyncio.sleep(0)
        a.close()
        assert await pending == b""

    loop.run_until_complete(main())


def test_recv_sizes_as_the_socket_module_takes_them(loop, pair):
    a, b = pair

    async def main():
        assert await loop.sock_recv(b, 0) == b""  # at once, nothing being there
        with pytest.raises(ValueError):
            await loop.sock_recv(b, -1)
        with pytest.raises((MemoryError, OverflowError)):
            await loop.sock_recv(b, 1 << 62)  # too big to allocate: an exception, not a crash
        a.send(b"x" * 300_000)
        got = await loop.sock_recv(b, 1 << 20)  # larger than any internal buffer
        assert 0 < len(got) <= 300_000 and set(got) == {ord("x")}

    loop.run_until_complete(main())


def test_recv_of_a_large_size_returns_exactly_what_arrived(loop, pair):
    a, b = pair

    async def main():
        # Sizes beyond any internal buffer read straight into the result, cut to what came.
        for i in range(1, 60):
            sent = bytes((i + k) % 251 for k in range(i * 97))
            a.send(sent)
            assert await loop.sock_recv(b, 4 << 20) == sent
        a.setblocking(False)
        sent = bytes(range(256)) * 12_000  # 3 MB
        sender = asyncio.ensure_future(loop.sock_sendall(a, sent))
        got = bytearray()
        while len(got) < len(sent):
            chunk = await loop.sock_recv(b, 1 << 20)
            assert chunk
            got += chunk
        await sender
        assert got == sent
        a.close()
        assert await loop.sock_recv(b, 1 << 20) == b""

    loop.run_until_complete(main())


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_large_sendall_needs_many_writable_waits(loop, kind):
    size = 6 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    data = kind(payload) if kind is not memoryview else memoryview(bytearray(payload))

    async def main():
        with tcp_pair() as (client, server):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            sender = asyncio.ensure_future(loop.sock_sendall(client, data))
            await asyncio.sleep(0)
            assert not sender.done()  # the kernel buffers cannot take 6 MB at once
            received = bytearray()
            reads = 0
            while len(received) < size:
                chunk = await loop.sock_recv(server, 256 * 1024)
                assert chunk
                received += chunk
                reads += 1
            assert await sender is None
            assert reads > 10
            assert received == payload
            # Nothing stays registered once the transfer is over.
            assert loop.remove_writer(client.fileno()) is False
            assert loop.remove_reader(server.fileno()) is False

    loop.run_until_complete(main())


def test_sendall_empty(loop, pair):
    a, b = pair
    assert loop.run_until_complete(loop.sock_sendall(a, b"")) is None


def test_concurrent_readers_on_two_sockets(loop):
    async def main():
        with closing(*socket.socketpair(), *socket.socketpair()) as (a1, b1, a2, b2):
            for s in (a1, b1, a2, b2):
                s.setblocking(False)
            r1 = asyncio.ensure_future(loop.sock_recv(b1, 10))
            r2 = asyncio.ensure_future(loop.sock_recv(b2, 10))
            await asyncio.sleep(0)
            await loop.sock_sendall(a2, b"two")
            await loop.sock_sendall(a1, b"one")
            assert await asyncio.gather(r1, r2) == [b"one", b"two"]

    loop.run_until_complete(main())


# -- connect and accept -------------------------------------------------------------------------


def test_connect_and_accept(loop):
    async def main():
        with listener() as lsock, closing(socket.socket()) as (client,):
            client.setblocking(False)
            accepting = asyncio.ensure_future(loop.sock_accept(lsock))
            await asyncio.sleep(0)
            assert not accepting.done()
            assert await loop.sock_connect(client, lsock.getsockname()) is None
            conn, addr = await accepting
            with conn:
                assert conn.gettimeout() == 0
                assert addr == client.getsockname()
                assert client.getpeername() == lsock.getsockname()
                await loop.sock_sendall(client, b"hello")
                assert await loop.sock_recv(conn, 10) == b"hello"
            assert loop.remove_reader(lsock.fileno()) is False
            assert loop.remove_writer(client.fileno()) is False

    loop.run_until_complete(main())


def test_connect_resolves_host_names(loop):
    async def main():
        with listener() as lsock, closing(socket.socket()) as (client,):
            client.setblocking(False)
            await loop.sock_connect(client, ("localhost", lsock.getsockname()[1]))
            conn, _ = await loop.sock_accept(lsock)
            conn.close()
            assert client.getpeername() == lsock.getsockname()

    loop.run_until_complete(main())


def test_connect_ipv6_literal(loop):
    try:
        lsock = listener(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")

    async def main():
        with lsock, closing(socket.socket(socket.AF_INET6)) as (client,):
            client.setblocking(False)
            await loop.sock_connect(client, ("::1", lsock.getsockname()[1]))
            conn, addr = await loop.sock_accept(lsock)
            conn.close()
            assert addr[:2] == client.getsockname()[:2]

    loop.run_until_complete(main())


def test_connect_refused(loop):
    port = free_port()

    async def main():
        with closing(socket.socket()) as (client,):
            client.setblocking(False)
            with pytest.raises(ConnectionRefusedError) as info:
                await loop.sock_connect(client, ("127.0.0.1", port))
            assert info.value.errno == errno.ECONNREFUSED
            assert loop.remove_writer(client.fileno()) is False

    loop.run_until_complete(main())


def test_connect_to_closed_listener_after_cancelled_accept(loop):
    async def main():
        with listener() as lsock:
            address = lsock.getsockname()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_accept(lsock), 0.05)
        with closing(socket.socket()) as (client,):
            client.setblocking(False)
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(client, address)

    loop.run_until_complete(main())


def test_accept_error(loop):
    async def main():
        with closing(socket.socket()) as (sock,):
            sock.setblocking(False)
            with pytest.raises(OSError) as info:
                await loop.sock_accept(sock)  # not listening
            assert info.value.errno == errno.EINVAL

    loop.run_until_complete(main())


# -- errors --------------------------------------------------------------------------------------


def test_sendall_to_closed_peer_is_broken_pipe(loop, pair):
    a, b = pair
    b.close()

    async def main():
        with pytest.raises(BrokenPipeError) as info:
            await loop.sock_sendall(a, b"x" * 100)
        assert info.value.errno == errno.EPIPE

    loop.run_until_complete(main())


def test_pending_sendall_fails_when_peer_resets(loop):
    async def main():
        with tcp_pair() as (client, server):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            sender = asyncio.ensure_future(loop.sock_sendall(client, b"x" * (8 * 1024 * 1024)))
            await asyncio.sleep(0.05)
            assert not sender.done()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.close()
            with pytest.raises(ConnectionError) as info:
                await sender
            expected_type = {errno.ECONNRESET: ConnectionResetError, errno.EPIPE: BrokenPipeError}
            assert type(info.value) is expected_type[info.value.errno]
            assert loop.remove_writer(client.fileno()) is False

    loop.run_until_complete(main())


def test_pending_recv_fails_when_peer_resets(loop):
    async def main():
        with tcp_pair() as (client, server):
            reader = asyncio.ensure_future(loop.sock_recv(client, 100))
            await asyncio.sleep(0)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.close()
            with pytest.raises(ConnectionResetError) as info:
                await reader
            assert info.value.errno == errno.ECONNRESET
            assert loop.remove_reader(client.fileno()) is False

    loop.run_until_complete(main())


# -- one socket waiting again and again -------------------------------------------------------


def _socket_on_fd(fd, sock):
    """A socket object for ``sock``'s file, under the fd number ``fd`` (closing what it named)."""
    os.dup2(sock.fileno(), fd)
    new = socket.socket(fileno=fd)
    new.setblocking(False)
    return new


def _two_pairs():
    """Two connected non-blocking socket pairs: ``a, b, c, d`` (a-b and c-d)."""
    socks = (*socket.socketpair(), *socket.socketpair())
    for sock in socks:
        sock.setblocking(False)
    return socks


async def _recv_after_wait(loop, reader_sock, writer_sock, data):
    """A ``sock_recv`` that has to wait for the loop before ``data`` arrives."""
    pending = asyncio.ensure_future(loop.sock_recv(reader_sock, 100))
    await asyncio.sleep(0)
    assert not pending.done()
    writer_sock.send(data)
    return await asyncio.wait_for(pending, 5)


def test_recv_waits_many_times_on_one_socket(loop, pair):
    a, b = pair

    async def main():
        for i in range(50):
            message = b"round %d" % i
            assert await _recv_after_wait(loop, b, a, message) == message
            # Data that arrives between two waits is there for the next one.
            a.send(b"early")
            await _settle()
            assert await loop.sock_recv(b, 100) == b"early"
        assert loop.remove_reader(b.fileno()) is False

    loop.run_until_complete(main())


def test_recv_on_a_new_socket_with_a_closed_sockets_fd_number(loop):
    async def main():
        a, b, c, d = _two_pairs()
        with closing(a, c, d):
            assert await _recv_after_wait(loop, b, a, b"old") == b"old"
            fd = b.fileno()
            b.close()
            with _socket_on_fd(fd, c) as e:
                assert e.fileno() == fd
                assert await _recv_after_wait(loop, e, d, b"new") == b"new"
                assert await _recv_after_wait(loop, e, d, b"again") == b"again"

    loop.run_until_complete(main())


def test_fd_number_reused_while_the_old_file_lives_on(loop):
    # The old socket's file stays open through a duplicate; data for it must not reach what
    # the fd number names now: a sock_recv, then a plain reader.
    async def main():
        a, b, c, d = _two_pairs()
        with closing(a, c, d):
            assert await _recv_after_wait(loop, b, a, b"first") == b"first"
            fd = b.fileno()
            keep = socket.socket(fileno=os.dup(fd))
            b.close()
            with keep, _socket_on_fd(fd, c) as e:
                pending = asyncio.ensure_future(loop.sock_recv(e, 100))
                await asyncio.sleep(0)
                a.send(b"for the old file")
                await _settle()
                assert not pending.done()
                d.send(b"for the new one")
                assert await asyncio.wait_for(pending, 5) == b"for the new one"

                calls = []
                got = loop.create_future()

                def on_readable():
                    calls.append(None)
                    if not got.done():
                        got.set_result(e.recv(100))

                loop.add_reader(e, on_readable)
                a.send(b"old again")
                await _settle()
                assert calls == []
                d.send(b"new again")
                assert await asyncio.wait_for(got, 5) == b"new again"
                assert loop.remove_reader(e) is True
                keep.setblocking(False)
                assert keep.recv(100) == b"for the old fileold again"

    loop.run_until_complete(main())


def test_plain_reader_and_transport_after_a_completed_recv(loop, pair):
    a, b = pair

    async def main():
        assert await _recv_after_wait(loop, b, a, b"one") == b"one"
        got = loop.create_future()
        loop.add_reader(b, lambda: got.done() or got.set_result(b.recv(100)))
        a.send(b"two")
        assert await asyncio.wait_for(got, 5) == b"two"
        assert loop.remove_reader(b) is True
        assert await _recv_after_wait(loop, b, a, b"three") == b"three"

        received = loop.create_future()

        class Proto(asyncio.Protocol):
            def data_received(self, data):
                if not received.done():
                    received.set_result(data)

        transport, _ = await loop.connect_accepted_socket(Proto, b)
        try:
            a.send(b"four")
            assert await asyncio.wait_for(received, 5) == b"four"
        finally:
            transport.close()
            await _settle()

    loop.run_until_complete(main())


def test_recv_on_another_loop_then_back(loop, loop_factory, pair):
    a, b = pair
    assert loop.run_until_complete(_recv_after_wait(loop, b, a, b"one")) == b"one"
    other = loop_factory()
    try:
        assert other.run_until_complete(_recv_after_wait(other, b, a, b"two")) == b"two"
        a.send(b"between")
        assert other.run_until_complete(other.sock_recv(b, 100)) == b"between"
    finally:
        other.close()
    assert loop.run_until_complete(_recv_after_wait(loop, b, a, b"three")) == b"three"
    a.send(b"four")
    assert loop.run_until_complete(loop.sock_recv(b, 100)) == b"four"


def test_recv_waits_on_two_objects_for_one_fd(loop, pair):
    # A second socket object over the same fd (socket(fileno=...)) waits like the first.
    a, b = pair

    async def main():
        assert await _recv_after_wait(loop, b, a, b"one") == b"one"
        alias = socket.socket(fileno=b.fileno())
        alias.setblocking(False)
        try:
            assert await _recv_after_wait(loop, alias, a, b"two") == b"two"
            assert await _recv_after_wait(loop, b, a, b"three") == b"three"
        finally:
            alias.detach()

    loop.run_until_complete(main())


# -- cancellation ---------------------------------------------------------------------------------


def test_cancel_pending_recv_unregisters(loop, pair):
    a, b = pair

    async def main():
        reader = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await _settle()
        assert loop.remove_reader(b.fileno()) is False
        # Data arriving now is not swallowed by a leftover callback ...
        a.send(b"kept")
        await _settle()
        assert b.recv(100) == b"kept"
        # ... and the fd takes a new reader.
        got = loop.create_future()
        loop.add_reader(b, lambda: got.set_result(b.recv(100)) if not got.done() else None)
        a.send(b"again")
        assert await asyncio.wait_for(got, 5) == b"again"
        assert loop.remove_reader(b) is True

    loop.run_until_complete(main())


def test_cancel_then_recv_again_in_the_same_turn(loop, pair):
    # The cancelled operation's clean-up runs a turn later, after the new operation registered the
    # same fd (awaited inline, so it registers before the clean-up runs): the clean-up must not
    # unregister the new one.
    a, b = pair

    async def main():
        first = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        first.cancel()
        loop.call_later(0.05, a.send, b"data")
        async with asyncio.timeout(5):
            assert await loop.sock_recv(b, 100) == b"data"
        assert first.cancelled()

    loop.run_until_complete(main())


def test_cancel_pending_recv_into_and_recvfrom(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        for coro in (loop.sock_recv_into(b, buf), loop.sock_recvfrom(b, 10), loop.sock_recvfrom_into(b, buf)):
            task = asyncio.ensure_future(coro)
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _settle()
            assert loop.remove_reader(b.fileno()) is False
        a.send(b"xyz")
        await _settle()
        assert b.recv(10) == b"xyz"
        assert buf == bytearray(10)

    loop.run_until_complete(main())


def test_cancel_pending_accept_unregisters(loop):
    async def main():
        with listener() as lsock:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_accept(lsock), 0.05)
            await _settle()
            assert loop.remove_reader(lsock.fileno()) is False
            # A connection made now stays queued for whoever accepts next.
            with socket.create_connection(lsock.getsockname()) as client:
                await asyncio.sleep(0.05)
                await _settle()
                conn, addr = lsock.accept()
                conn.close()
                assert addr == client.getsockname()
                # And the fd can be watched again.
                ready = loop.create_future()
                loop.add_reader(lsock, lambda: None if ready.done() else ready.set_result(True))
                with socket.create_connection(lsock.getsockname()):
                    assert await asyncio.wait_for(ready, 5)
                assert loop.remove_reader(lsock) is True

    loop.run_until_complete(main())


def test_cancel_pending_sendall_unregisters(loop):
    async def main():
        with tcp_pair() as (client, server):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            # Fill the send path until even 4 more bytes would block.
            size = 8192
            while size >= 4:
                try:
                    while True:
                        client.send(b" " * size)
                except BlockingIOError:
                    size //= 2
            sender = asyncio.ensure_future(loop.sock_sendall(client, b"hello"))
            await asyncio.sleep(0)
            assert not sender.done()
            sender.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sender
            await _settle()
            assert loop.remove_writer(client.fileno()) is False

            async def read_all():
                data = b""
                while True:
                    chunk = await loop.sock_recv(server, 65536)
                    if not chunk:
                        return data
                    data += chunk.strip()

            reader = asyncio.ensure_future(read_all())
            await loop.sock_sendall(client, b"world")
            client.shutdown(socket.SHUT_WR)
            assert (await asyncio.wait_for(reader, 10)).endswith(b"world")

    loop.run_until_complete(main())


def test_cancelled_accept_does_not_take_a_connection(loop):
    async def main():
        with listener() as lsock:
            task = asyncio.ensure_future(loop.sock_accept(lsock))
            await asyncio.sleep(0)
            task.cancel()
            with socket.create_connection(lsock.getsockname()):
                await asyncio.sleep(0.05)
                with pytest.raises(asyncio.CancelledError):
                    await task
                await _settle()
                conn, _ = await loop.sock_accept(lsock)
                conn.close()

    loop.run_until_complete(main())


# -- datagrams ---------------------------------------------------------------------------------


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a, b:
        for s in (a, b):
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
        yield a, b


def test_udp_sendto_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        pending = asyncio.ensure_future(loop.sock_recvfrom(b, 4096))
        await asyncio.sleep(0)
        assert not pending.done()
        assert await loop.sock_sendto(a, b"\x01" * 4096, b.getsockname()) == 4096
        data, addr = await pending
        assert data == b"\x01" * 4096
        assert addr == a.getsockname()
        # Already queued: no wait.
        await loop.sock_sendto(b, b"back", a.getsockname())
        assert await loop.sock_recvfrom(a, 100) == (b"back", b.getsockname())

    loop.run_until_complete(main())


def test_udp_recvfrom_into(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(8192)
        pending = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
        await asyncio.sleep(0)
        await loop.sock_sendto(a, b"x" * 100, b.getsockname())
        assert await pending == (100, a.getsockname())
        assert buf[:100] == b"x" * 100
        # With an explicit nbytes: the rest of the datagram is dropped.
        buf = bytearray(8192)
        await loop.sock_sendto(a, b"y" * 100, b.getsockname())
        await asyncio.sleep(0.01)
        with memoryview(buf) as view:
            assert await loop.sock_recvfrom_into(b, view, 10) == (10, a.getsockname())
        assert buf[:11] == b"y" * 10 + b"\x00"

    loop.run_until_complete(main())


def test_udp_sendto_waits_until_writable(loop, udp_pair):
    # A datagram socket hardly ever blocks: simulate one whose first sendto() would.
    a, b = udp_pair
    fake = mock.Mock(a)
    fake.gettimeout = a.gettimeout
    fake.fileno = a.fileno
    fake.sendto.configure_mock(side_effect=BlockingIOError)

    async def main():
        loop.call_soon(setattr, fake, "sendto", a.sendto)
        assert await loop.sock_sendto(fake, b"late", b.getsockname()) == 4
        assert await loop.sock_recvfrom(b, 100) == (b"late", a.getsockname())
        assert loop.remove_writer(a.fileno()) is False

    loop.run_until_complete(main())


def test_udp_sendto_error(loop, udp_pair):
    a, _ = udp_pair

    async def main():
        with pytest.raises(OSError) as info:
            await loop.sock_sendto(a, b"x" * 70000, ("127.0.0.1", 9))
        assert info.value.errno == errno.EMSGSIZE

    loop.run_until_complete(main())


# -- argument checks ---------------------------------------------------------------------------


def _all_operations(loop, sock, buf):
    address = ("127.0.0.1", 9)
    return {
        "sock_recv": lambda: loop.sock_recv(sock, 10),
        "sock_recv_into": lambda: loop.sock_recv_into(sock, buf),
        "sock_recvfrom": lambda: loop.sock_recvfrom(sock, 10),
        "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(sock, buf),
        "sock_sendall": lambda: loop.sock_sendall(sock, b"x"),
        "sock_sendto": lambda: loop.sock_sendto(sock, b"x", address),
        "sock_connect": lambda: loop.sock_connect(sock, address),
        "sock_accept": lambda: loop.sock_accept(sock),
    }


@pytest.mark.parametrize(
    "operation",
    [
        "sock_recv",
        "sock_recv_into",
        "sock_recvfrom",
        "sock_recvfrom_into",
        "sock_sendall",
        "sock_sendto",
        "sock_connect",
        "sock_accept",
    ],
)
def test_blocking_socket_rejected_in_debug_mode(loop, operation):
    loop.set_debug(True)
    with closing(socket.socket()) as (sock,):
        sock.setblocking(True)
        coro = _all_operations(loop, sock, bytearray(10))[operation]()
        with pytest.raises(ValueError, match="must be non-blocking"):
            loop.run_until_complete(coro)
        sock.settimeout(1.0)  # a timeout is not non-blocking either
        coro = _all_operations(loop, sock, bytearray(10))[operation]()
        with pytest.raises(ValueError, match="must be non-blocking"):
            loop.run_until_complete(coro)


@pytest.mark.parametrize("operation", ["sock_recv", "sock_recv_into", "sock_recvfrom"])
def test_receive_on_a_socket_with_a_timeout_waits_in_the_socket(loop, pair, operation):
    # Outside debug mode (which refuses the socket) the stdlib's loop calls the socket's own
    # method, which waits for its timeout and raises TimeoutError, or returns what arrives
    # within it.
    loop.set_debug(False)
    a, b = pair
    a.settimeout(0.05)
    call = {
        "sock_recv": lambda: loop.sock_recv(a, 10),
        "sock_recv_into": lambda: loop.sock_recv_into(a, bytearray(10)),
        "sock_recvfrom": lambda: loop.sock_recvfrom(a, 10),
    }[operation]

    async def main():
        # The socket's own "timed out", not wait_for's.
        with pytest.raises(TimeoutError, match="timed out"):
            await asyncio.wait_for(call(), 5)
        b.send(b"late")
        return await asyncio.wait_for(call(), 5)

    result = loop.run_until_complete(main())
    assert result == {"sock_recv": b"late", "sock_recv_into": 4, "sock_recvfrom": (b"late", None)}[operation]


@pytest.mark.parametrize(
    "operation",
    [
        "sock_recv",
        "sock_recv_into",
        "sock_recvfrom",
        "sock_recvfrom_into",
        "sock_sendall",
        "sock_sendto",
        "sock_connect",
        "sock_accept",
    ],
)
def test_ssl_socket_rejected(loop, operation):
    context = ssl.create_default_context()
    with closing(socket.socket()) as (raw,):
        raw.setblocking(False)
        sock = context.wrap_socket(raw, server_hostname="example.invalid", do_handshake_on_connect=False)
        with sock:
            coro = _all_operations(loop, sock, bytearray(10))[operation]()
            with pytest.raises(TypeError, match="SSLSocket"):
                loop.run_until_complete(coro)


def test_no_fd_leaks(loop):
    async def exercise():
        with tcp_pair() as (client, server):
            await loop.sock_sendall(client, b"abc")
            assert await loop.sock_recv(server, 10) == b"abc"
            task = asyncio.ensure_future(loop.sock_recv(server, 10))
            await asyncio.sleep(0)
            task.cancel()
            await _settle()
        with listener() as lsock:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_accept(lsock), 0.01)
            with closing(socket.socket()) as (client,):
                client.setblocking(False)
                await loop.sock_connect(client, lsock.getsockname())
                conn, _ = await loop.sock_accept(lsock)
                conn.close()
        with closing(socket.socket()) as (client,):
            client.setblocking(False)
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(client, ("127.0.0.1", free_port()))
        await _settle()

    loop.run_until_complete(exercise())  # warm up whatever the loop opens lazily
    gc.collect()  # earlier tests may have left sockets for the collector to close
    before = open_fds()
    for _ in range(5):
        loop.run_until_complete(exercise())
    # No collection now: an fd that only the collector would close counts as a leak too.
    assert open_fds() - before == set()


def test_operations_do_not_touch_other_fds(loop, pair):
    # A pending sock_recv on one socket leaves another fd's reader alone, and vice versa.
    a, b = pair

    async def main():
        r, w = os.pipe()
        try:
            os.set_blocking(r, False)
            fired = loop.create_future()
            loop.add_reader(r, lambda: None if fired.done() else fired.set_result(os.read(r, 10)))
            reader = asyncio.ensure_future(loop.sock_recv(b, 10))
            await asyncio.sleep(0)
            reader.cancel()
            await _settle()
            os.write(w, b"pipe")
            assert await asyncio.wait_for(fired, 5) == b"pipe"
            assert loop.remove_reader(r) is True
        finally:
            os.close(r)
            os.close(w)

    loop.run_until_complete(main())


@pytest.mark.parametrize(
    ("n", "error", "message"),
    [
        (2**63, OverflowError, "^Python int too large to convert to C ssize_t$"),
        (-(2**63) - 1, OverflowError, "^Python int too large to convert to C ssize_t$"),
        (-1, ValueError, "^negative buffersize in recv$"),
        (1.5, TypeError, "^'float' object cannot be interpreted as an integer$"),
    ],
)
def test_sock_recv_size_is_checked_as_socket_recv_checks_it(loop, n, error, message):
    async def main():
        with tcp_pair() as (client, server):
            client.setblocking(False)
            with pytest.raises(error, match=message):
                await loop.sock_recv(client, n)

    loop.run_until_complete(main())


def test_sock_methods_refuse_the_fd_of_an_open_transport(loop):
    async def main():
        with listener() as lsock:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(asyncio.Protocol, *lsock.getsockname()), 5
            )
            fd = transport.get_extra_info("socket").fileno()
            alias = socket.socket(fileno=fd)  # the same fd, in another socket object
            try:
                alias.setblocking(False)
                # (A loop that does not refuse would wait for data: time out instead.)
                with pytest.raises(RuntimeError, match="is used by transport"):
                    await asyncio.wait_for(loop.sock_recv(alias, 1), 5)
                with pytest.raises(RuntimeError, match="is used by transport"):
                    await asyncio.wait_for(loop.sock_recv_into(alias, bytearray(1)), 5)
            finally:
                alias.detach()
            transport.close()
            await asyncio.sleep(0.01)
            # Closed, the transport no longer claims the fd, which the next socket may get.
            a, b = socket.socketpair()
            with closing(a, b):
                a.setblocking(False)
                b.setblocking(False)
                await loop.sock_sendall(a, b"free")
                assert await loop.sock_recv(b, 4) == b"free"
                del transport
                gc.collect()
                await loop.sock_sendall(b, b"gone")
                assert await loop.sock_recv(a, 4) == b"gone"

    loop.run_until_complete(main())
