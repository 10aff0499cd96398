"""The datagram transport in detail: sender addresses as the socket module makes them, the
send buffer and flow control, closing with datagrams still buffered, and where errors go."""

import asyncio
import errno
import logging
import os
import pathlib
import socket
import uuid

import pytest
from _netutil import PAUSE_RESUME_CLOSE_LOG, DatagramRecorder, pause_resume_close_logged, wait
from _sockutil import TrackedSocket, closing

HAS_IPV6 = socket.has_ipv6


def _ipv6_loopback_works():
    if not HAS_IPV6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class FlowRecorder(DatagramRecorder):
    def __init__(self):
        super().__init__()
        self.flow: list[str] = []

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")


@pytest.fixture
def unix_paths():
    paths = [str(pathlib.Path("/tmp") / f"fl-{uuid.uuid4().hex[:12]}.dgram") for _ in range(3)]
    yield paths
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")
def test_ipv6_sender_address_is_a_4_tuple(loop):
    async def main():
        transport, proto = await wait(loop.create_datagram_endpoint(DatagramRecorder, local_addr=("::1", 0)))
        with closing(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("::1", 0))
            peer.sendto(b"six", transport.get_extra_info("sockname"))
            data, addr = await wait(proto.queue.get())
            assert data == b"six"
            assert addr == peer.getsockname() and len(addr) == 4
            transport.sendto(b"back", addr)
            peer.setblocking(False)
            assert await wait(loop.sock_recvfrom(peer, 10)) == (b"back", transport.get_extra_info("sockname"))
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")
def test_ipv4_sender_on_dual_stack_socket_is_mapped(loop):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("::", 0), family=socket.AF_INET6)
        )
        port = transport.get_extra_info("sockname")[1]
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.sendto(b"four", ("127.0.0.1", port))
            data, addr = await wait(proto.queue.get())
            assert data == b"four"
            assert addr == ("::ffff:127.0.0.1", peer.getsockname()[1], 0, 0)
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


def test_unix_sender_addresses(loop, unix_paths):
    """A named sender is a str (undecodable bytes surrogate-escaped), an abstract one bytes, an
    unbound one None: what sock.recvfrom() returns."""
    mine, theirs, _ = unix_paths
    odd = os.fsencode(theirs) + b"-\xff"
    abstract = b"\0fl-abstract-" + uuid.uuid4().hex[:8].encode()

    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=mine, family=socket.AF_UNIX)
        )
        named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        undecodable = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        in_abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        unbound = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with closing(named, undecodable, in_abstract, unbound):
            named.bind(theirs)
            undecodable.bind(odd)
            in_abstract.bind(abstract)
            try:
                named.sendto(b"1", mine)
                undecodable.sendto(b"2", mine)
                in_abstract.sendto(b"3", mine)
                unbound.sendto(b"4", mine)
                got = [await wait(proto.queue.get()) for _ in range(4)]
            finally:
                os.unlink(odd)
        assert got == [(b"1", theirs), (b"2", os.fsdecode(odd)), (b"3", abstract), (b"4", None)]
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


async def _local_endpoint(loop, protocol=DatagramRecorder):
    return await wait(loop.create_datagram_endpoint(protocol, local_addr=("127.0.0.1", 0)))


async def _fill_unix_endpoint(loop, unix_paths, protocol=FlowRecorder):
    """An endpoint connected to a Unix datagram socket nobody reads, with its buffer in use.

    Returns (transport, protocol, receiver, sent): ``sent`` lists every datagram accepted.
    """
    _, theirs, _ = unix_paths
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(theirs)
    receiver.setblocking(False)
    transport, proto = await wait(
        loop.create_datagram_endpoint(protocol, remote_addr=theirs, family=socket.AF_UNIX)
    )
    transport.set_write_buffer_limits(high=4096, low=1024)
    sent = []
    for i in range(100_000):
        payload = b"%06d" % i + b"x" * 1000
        transport.sendto(payload)
        sent.append(payload)
        if transport.get_write_buffer_size() > 0:
            break
    else:
        pytest.fail("the kernel never refused a datagram")
    for i in range(len(sent), len(sent) + 10):
        payload = b"%06d" % i + b"y" * 1000
        transport.sendto(payload)
        sent.append(payload)
    return transport, proto, receiver, sent


async def _drain(loop, receiver, count):
    return [(await wait(loop.sock_recvfrom(receiver, 2000)))[0] for _ in range(count)]


def test_full_socket_buffers_in_order_with_flow_control(loop, unix_paths):
    async def main():
        transport, proto, receiver, sent = await _fill_unix_endpoint(loop, unix_paths)
        with receiver:
            assert transport.get_write_buffer_size() > 4096
            assert proto.flow == ["pause"]
            assert await _drain(loop, receiver, len(sent)) == sent
            for _ in range(100):
                if proto.flow == ["pause", "resume"]:
                    break
                await asyncio.sleep(0.01)
            assert proto.flow == ["pause", "resume"]
            assert transport.get_write_buffer_size() < 1024
            transport.sendto(b"after")
            assert await _drain(loop, receiver, 1) == [b"after"]
            transport.close()
            assert await wait(proto.lost) is None

    loop.run_until_complete(main())


def test_close_sends_what_is_buffered_first(loop, unix_paths):
    async def main():
        transport, proto, receiver, sent = await _fill_unix_endpoint(loop, unix_paths)
        with receiver:
            transport.close()
            assert transport.is_closing()
            await asyncio.sleep(0.02)
            assert not proto.lost.done()  # connection_lost waits for the buffer
            assert await _drain(loop, receiver, len(sent)) == sent
            assert await wait(proto.lost) is None
            assert transport.get_extra_info("socket").fileno() == -1

    loop.run_until_complete(main())


def test_abort_drops_what_is_buffered(loop, unix_paths):
    async def main():
        transport, proto, receiver, sent = await _fill_unix_endpoint(loop, unix_paths)
        with receiver:
            buffered = transport.get_write_buffer_size()
            assert buffered > 0
            transport.abort()
            assert await wait(proto.lost) is None
            received = []
            while True:
                try:
                    received.append(receiver.recv(2000))
                except BlockingIOError:
                    break
            assert 0 < len(received) < len(sent)
            assert received == sent[: len(received)]

    loop.run_until_complete(main())


def test_datagram_received_error_goes_to_the_exception_handler(loop, handler_calls):
    class Failing(DatagramRecorder):
        def datagram_received(self, data, addr):
            if data == b"boom":
                raise ZeroDivisionError("from datagram_received")
            super().datagram_received(data, addr)

    async def main():
        transport, proto = await _local_endpoint(loop, Failing)
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("127.0.0.1", 0))
            address = transport.get_extra_info("sockname")
            peer.sendto(b"boom", address)
            peer.sendto(b"fine", address)
            assert await wait(proto.queue.get()) == (b"fine", peer.getsockname())
        assert not transport.is_closing()
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ZeroDivisionError)


def test_max_size_bounds_each_datagram(loop):
    async def main():
        transport, proto = await _local_endpoint(loop)
        assert transport.max_size == type(transport).max_size == 256 * 1024
        transport.max_size = 10
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("127.0.0.1", 0))
            address = transport.get_extra_info("sockname")
            peer.sendto(b"0123456789abcdef", address)
            assert await wait(proto.queue.get()) == (b"0123456789", peer.getsockname())
            transport.max_size = 300 * 1024
            peer.sendto(b"x" * 60_000, address)
            assert await wait(proto.queue.get()) == (b"x" * 60_000, peer.getsockname())
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


def test_negative_max_size_is_a_fatal_read_error(loop, handler_calls):
    async def main():
        transport, proto = await _local_endpoint(loop)
        transport.max_size = -1
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.sendto(b"data", transport.get_extra_info("sockname"))
            exc = await wait(proto.lost)
        assert isinstance(exc, ValueError)
        assert proto.queue.empty()

    loop.run_until_complete(main())
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal read error on datagram transport"


def test_connected_endpoint_refuses_another_address(loop):
    async def main():
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            target = peer.getsockname()
            transport, proto = await wait(loop.create_datagram_endpoint(DatagramRecorder, remote_addr=target))
            with pytest.raises(ValueError, match="Invalid address"):
                transport.sendto(b"x", ("127.0.0.1", target[1] + 1 if target[1] < 65535 else 1))
            transport.sendto(b"same", target)  # the remote address itself is allowed
            transport.sendto(b"none", None)
            got = [await wait(loop.sock_recvfrom(peer, 10)) for _ in range(2)]
            assert [data for data, _ in got] == [b"same", b"none"]
            transport.close()
            await wait(proto.lost)

    loop.run_until_complete(main())


def test_send_os_error_goes_to_error_received(loop):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        # Broadcast without SO_BROADCAST is refused with EACCES.
        transport.sendto(b"x", ("255.255.255.255", 9))
        exc = await wait(proto.errors.get())
        assert isinstance(exc, PermissionError) and exc.errno == errno.EACCES
        assert not transport.is_closing()
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.000.000.001", "0177.0.0.1", "127.1", "localhost", "0x7f.0.0.1"],
)
def test_sendto_address_spellings(loop, host):
    # The socket module reads a dotted quad with inet_pton, and anything else (leading zeros,
    # octal, short forms, names) through getaddrinfo: every spelling reaches 127.0.0.1.
    async def main():
        receiver, inbox = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        sender, outbox = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        port = receiver.get_extra_info("sockname")[1]
        sender.sendto(b"to " + host.encode(), (host, port))
        data, addr = await wait(inbox.queue.get())
        assert (data, addr) == (b"to " + host.encode(), sender.get_extra_info("sockname"))
        for t, p in ((sender, outbox), (receiver, inbox)):
            t.close()
            await wait(p.lost)

    loop.run_until_complete(main())


def test_socket_subclass_receives_and_sends_through_its_methods(loop):
    async def main():
        sock = TrackedSocket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        transport, proto = await wait(loop.create_datagram_endpoint(DatagramRecorder, sock=sock))
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("127.0.0.1", 0))
            peer.sendto(b"ping", sock.getsockname())
            assert await wait(proto.queue.get()) == (b"ping", peer.getsockname())
            transport.sendto(b"pong", peer.getsockname())
            peer.settimeout(5)
            assert peer.recvfrom(10) == (b"pong", sock.getsockname())
        transport.close()
        await wait(proto.lost)
        return sorted(sock.used)

    assert loop.run_until_complete(main()) == ["recv", "send"]


@pytest.mark.parametrize(
    ("address", "error"),
    [
        (("127.0.0.1", 70000), OverflowError),
        (("127.0.0.1", -1), OverflowError),
        (("127.0.0.1", "9"), TypeError),
        (("127.0.0.1",), TypeError),
        (("127.0.0.1", 9, 0), TypeError),
        ((b"127.0.0.1", 9.5), TypeError),
    ],
)
def test_bad_ipv4_address_is_a_fatal_error(loop, handler_calls, address, error):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        transport.sendto(b"x", address)
        exc = await wait(proto.lost)
        assert isinstance(exc, error)

    loop.run_until_complete(main())
    assert [c["message"] for c in handler_calls] == ["Fatal write error on datagram transport"]


def test_bad_address_is_a_fatal_error(loop, handler_calls):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        transport.sendto(b"x", "not an address")
        exc = await wait(proto.lost)
        assert isinstance(exc, TypeError)
        assert transport.is_closing()

    loop.run_until_complete(main())
    assert [c["message"] for c in handler_calls] == ["Fatal write error on datagram transport"]


def test_pause_and_resume_reading(loop):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        assert transport.is_reading() and transport._paused is False
        transport.pause_reading()
        assert not transport.is_reading() and transport._paused is True
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("127.0.0.1", 0))
            peer.sendto(b"held", transport.get_extra_info("sockname"))
            await asyncio.sleep(0.05)
            assert proto.queue.empty()
            transport.resume_reading()
            assert transport.is_reading() and transport._paused is False
            assert await wait(proto.queue.get()) == (b"held", peer.getsockname())
        transport.pause_reading()
        transport.close()
        assert not transport.is_reading()
        assert transport._paused is True  # closing does not resume
        await wait(proto.lost)

    loop.run_until_complete(main())


@pytest.mark.parametrize("action", ["pause", "close", "swap"])
def test_no_datagram_after_the_protocol_stops_reading(loop, action):
    # Many datagrams wait in the socket; the protocol pauses reading, closes the transport or
    # hands it to another protocol in its first datagram_received: nothing more reaches it.
    class StopAfterFirst(DatagramRecorder):
        stopped = False

        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if self.stopped:
                return
            self.stopped = True
            if action == "pause":
                self.transport.pause_reading()
            elif action == "close":
                self.transport.close()
            else:
                self.transport.set_protocol(self.successor)

    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(StopAfterFirst, local_addr=("127.0.0.1", 0))
        )
        proto.successor = DatagramRecorder()
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            for i in range(20):
                peer.sendto(b"%d" % i, transport.get_extra_info("sockname"))
            await asyncio.sleep(0.05)
            assert proto.queue.qsize() == 1
            if action == "pause":
                transport.resume_reading()
                await asyncio.sleep(0.05)
                assert proto.queue.qsize() == 20
                transport.close()
            elif action == "swap":
                assert proto.successor.queue.qsize() == 19
                transport.close()
                await asyncio.sleep(0.01)
                return
            await wait(proto.lost)

    loop.run_until_complete(main())


def test_pause_and_resume_reading_log_changes_only(loop, caplog):
    loop.set_debug(True)

    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            logged = pause_resume_close_logged(transport, caplog.records)
        await wait(proto.lost)
        return logged

    assert loop.run_until_complete(main()) == PAUSE_RESUME_CLOSE_LOG


def test_repr_shows_polling_state(loop):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        )
        await asyncio.sleep(0)
        text = repr(transport)
        assert "read=polling" in text and "write=<idle, bufsize=0>" in text
        transport.close()
        await wait(proto.lost)
        assert "closed" in repr(transport)

    loop.run_until_complete(main())


def test_sends_after_a_connected_endpoint_closed_are_dropped_and_logged(loop, caplog):
    async def main():
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (peer,):
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            transport, proto = await wait(
                loop.create_datagram_endpoint(DatagramRecorder, remote_addr=peer.getsockname())
            )
            transport.close()
            await wait(proto.lost)
            with caplog.at_level("WARNING", logger="asyncio"):
                for _ in range(8):
                    transport.sendto(b"late")
            warnings = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
            assert len(warnings) == 4  # from the fifth send on
            with pytest.raises(BlockingIOError):
                peer.recvfrom(10)

    loop.run_until_complete(main())
