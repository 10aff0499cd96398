"""add_reader / add_writer / remove_reader / remove_writer."""

import contextlib
import errno
import os
import selectors
import socket
import threading
import time

import pytest


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _run_for(loop, seconds):
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


def test_add_reader_int_fd(loop, pipe):
    r, w = pipe
    received = []

    def on_readable():
        received.append(os.read(r, 100))
        loop.stop()

    loop.add_reader(r, on_readable)
    loop.call_soon(os.write, w, b"hello")
    loop.run_forever()
    assert received == [b"hello"]
    assert loop.remove_reader(r) is True


def test_add_reader_socket_object(loop, pair):
    a, b = pair
    received = []

    def on_readable(sock):
        received.append(sock.recv(100))
        loop.stop()

    loop.add_reader(a, on_readable, a)
    b.send(b"data")
    loop.run_forever()
    assert received == [b"data"]
    assert loop.remove_reader(a) is True


def test_add_reader_args(loop, pair):
    a, b = pair
    calls = []

    def on_readable(*args):
        calls.append(args)
        a.recv(100)
        loop.stop()

    loop.add_reader(a.fileno(), on_readable, 1, "two")
    b.send(b"x")
    loop.run_forever()
    loop.remove_reader(a.fileno())
    assert calls == [(1, "two")]


def test_reader_level_triggered(loop, pair):
    a, b = pair
    calls = []

    def on_readable():
        # Deliberately leave the data unread.
        calls.append(loop.time())
        if len(calls) == 3:
            loop.stop()

    loop.add_reader(a, on_readable)
    b.send(b"not drained")
    start = time.monotonic()
    loop.run_forever()
    loop.remove_reader(a)
    assert len(calls) == 3
    assert time.monotonic() - start < 1
    assert a.recv(100) == b"not drained"


def test_reader_called_once_per_iteration(loop, pair):
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "r")
    b.send(b"x")
    # The first iteration polls and dispatches the reader.
    loop.stop()
    loop.run_forever()
    loop.stop()
    loop.run_forever()
    loop.remove_reader(a)
    assert 1 <= len(calls) <= 2


def test_reader_not_called_without_data(loop, pair):
    a, _ = pair
    calls = []
    loop.add_reader(a, calls.append, "r")
    _run_for(loop, 0.02)
    loop.remove_reader(a)
    assert calls == []


def test_reader_wakes_blocked_loop(loop, pair):
    a, b = pair
    received = []

    def on_readable():
        received.append(a.recv(100))
        loop.stop()

    def writer_thread():
        time.sleep(0.05)
        b.send(b"wake")

    loop.add_reader(a, on_readable)
    t = threading.Thread(target=writer_thread)
    t.start()
    start = time.monotonic()
    try:
        loop.run_forever()
    finally:
        t.join()
    loop.remove_reader(a)
    assert received == [b"wake"]
    assert time.monotonic() - start < 2


def test_reader_sees_eof(loop, pair):
    a, b = pair
    received = []

    def on_readable():
        received.append(a.recv(100))
        loop.stop()

    loop.add_reader(a, on_readable)
    b.close()
    loop.run_forever()
    loop.remove_reader(a)
    assert received == [b""]


def test_add_reader_replaces_callback(loop, pair):
    a, b = pair
    calls = []

    def first():
        calls.append("first")

    def second():
        calls.append("second")
        a.recv(100)
        loop.stop()

    loop.add_reader(a, first)
    loop.add_reader(a, second)
    b.send(b"x")
    loop.run_forever()
    assert calls == ["second"]
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_replace_reader_with_int_then_object(loop, pair):
    a, b = pair
    calls = []
    loop.add_reader(a.fileno(), calls.append, "int")
    loop.add_reader(a, lambda: (calls.append("obj"), a.recv(10), loop.stop()))
    b.send(b"x")
    loop.run_forever()
    assert calls == ["obj"]
    assert loop.remove_reader(a.fileno()) is True


def test_remove_reader_with_int_after_add_with_object(loop, pair):
    a, _ = pair
    loop.add_reader(a, lambda: None)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a) is False


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_by_the_object_after_it_was_closed(loop, kind):
    # The registration is found by the object it was made with, though its fileno() is now -1
    # (code that closes a socket and then unregisters it in a done callback does this).
    add, remove = getattr(loop, f"add_{kind}"), getattr(loop, f"remove_{kind}")
    a, b = socket.socketpair()
    with b:
        add(a, lambda: None)
        a.close()
        assert remove(a) is True
        # Gone now: the object is unknown again.
        with pytest.raises(ValueError):
            remove(a)


@contextlib.contextmanager
def _closed_with_both_registered(loop):
    """A socket registered for reading and writing, then closed: (the socket, its old fd)."""
    a, b = socket.socketpair()
    with b:
        loop.add_reader(a, lambda: None)
        loop.add_writer(a, lambda: None)
        fd = a.fileno()
        a.close()
        yield a, fd


@pytest.mark.parametrize("first", ["reader", "writer"])
def test_removing_half_of_a_closed_objects_registration_fails(loop, first):
    # With both callbacks registered, removing one makes the selector modify the fd's epoll
    # entry, which the kernel dropped with the file: EBADF, and the registration is forgotten.
    with _closed_with_both_registered(loop) as (a, fd):
        with pytest.raises(OSError) as raised:
            getattr(loop, f"remove_{first}")(a)
        assert raised.value.errno == errno.EBADF
        for kind in ("reader", "writer"):
            with pytest.raises(ValueError):
                getattr(loop, f"remove_{kind}")(a)
            assert getattr(loop, f"remove_{kind}")(fd) is False


def test_removing_half_of_a_closed_objects_registration_after_fd_reuse(loop):
    # The fd number now belongs to a new socket that is not registered: ENOENT.
    with _closed_with_both_registered(loop) as (a, fd):
        with socket.socket() as c:
            if c.fileno() != fd:
                pytest.skip("the fd number was not reused")
            with pytest.raises(FileNotFoundError):
                loop.remove_writer(a)
            with pytest.raises(ValueError):
                loop.remove_reader(a)
            loop.add_reader(c, lambda: None)
            assert loop.remove_reader(c) is True


def test_closed_object_registered_by_number_is_not_found(loop):
    a, b = socket.socketpair()
    with b:
        loop.add_reader(a.fileno(), lambda: None)
        fd = a.fileno()
        a.close()
        with pytest.raises(ValueError):
            loop.remove_reader(a)
        assert loop.remove_reader(fd) is True


def test_object_registration_forgotten_after_removal_by_number(loop):
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with b, c, d:
        loop.add_reader(a, lambda: None)
        fd = a.fileno()
        assert loop.remove_reader(fd) is True
        a.close()
        with pytest.raises(ValueError):
            loop.remove_reader(a)


def test_remove_reader_not_registered(loop, pair):
    a, _ = pair
    assert loop.remove_reader(a) is False
    assert loop.remove_reader(a.fileno()) is False


def test_remove_writer_not_registered(loop, pair):
    a, _ = pair
    assert loop.remove_writer(a) is False


def test_remove_a_number_no_descriptor_has(loop):
    assert loop.remove_reader(2**40) is False
    assert loop.remove_writer(2**70) is False
    with pytest.raises(ValueError):
        loop.remove_reader(-1)


def test_removed_reader_not_called(loop, pair):
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "r")
    assert loop.remove_reader(a) is True
    b.send(b"x")
    _run_for(loop, 0.02)
    assert calls == []


def test_reader_removes_itself(loop, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append("r")
        assert loop.remove_reader(a) is True

    loop.add_reader(a, on_readable)
    b.send(b"x")
    _run_for(loop, 0.02)
    assert calls == ["r"]


def test_remove_reader_cancels_pending_dispatch(loop):
    # Two readers become ready in the same poll; whichever runs first removes
    # the other, which then must not run.
    s1, t1 = socket.socketpair()
    s2, t2 = socket.socketpair()
    try:
        calls = []

        def make(me, other):
            def cb():
                calls.append(me)
                loop.remove_reader(other)
                loop.remove_reader(me)

            return cb

        loop.add_reader(s1, make(s1, s2))
        loop.add_reader(s2, make(s2, s1))
        t1.send(b"x")
        t2.send(b"y")
        _run_for(loop, 0.02)
        assert len(calls) == 1
    finally:
        for s in (s1, t1, s2, t2):
            s.close()


def test_add_writer_socket(loop, pair):
    a, b = pair
    calls = []

    def on_writable():
        calls.append(a.send(b"via writer"))
        loop.stop()

    loop.add_writer(a, on_writable)
    loop.run_forever()
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False
    assert calls == [len(b"via writer")]
    assert b.recv(100) == b"via writer"


def test_add_writer_int_fd(loop, pipe):
    r, w = pipe
    calls = []

    def on_writable(fd):
        calls.append(os.write(fd, b"pipe"))
        loop.stop()

    loop.add_writer(w, on_writable, w)
    loop.run_forever()
    assert loop.remove_writer(w) is True
    assert os.read(r, 100) == b"pipe"


def test_writer_level_triggered(loop, pair):
    a, _ = pair
    calls = []

    def on_writable():
        calls.append(1)
        if len(calls) == 5:
            loop.stop()

    loop.add_writer(a, on_writable)
    loop.run_forever()
    loop.remove_writer(a)
    assert len(calls) == 5


def test_add_writer_replaces_callback(loop, pair):
    a, _ = pair
    calls = []
    loop.add_writer(a, calls.append, "first")
    loop.add_writer(a, lambda: (calls.append("second"), loop.stop()))
    loop.run_forever()
    loop.remove_writer(a)
    assert calls == ["second"]


def test_writer_not_called_when_buffer_full(loop, pair):
    a, b = pair
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []
    loop.add_writer(a, lambda: (calls.append("w"), loop.stop()))
    _run_for(loop, 0.02)
    assert calls == []

    # Draining the peer makes the socket writable again.
    try:
        while b.recv(1 << 20):
            pass
    except BlockingIOError:
        pass
    safety = loop.call_later(2, loop.stop)
    loop.run_forever()
    safety.cancel()
    loop.remove_writer(a)
    assert calls == ["w"]


def test_reader_and_writer_same_fd(loop, pair):
    a, b = pair
    events = []

    def on_readable():
        events.append("read")
        a.recv(100)
        if "write" in events:
            loop.stop()

    def on_writable():
        events.append("write")
        loop.remove_writer(a)
        if "read" in events:
            loop.stop()

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    b.send(b"x")
    loop.run_forever()
    assert sorted(set(events)) == ["read", "write"]
    # Removing the writer left the reader in place.
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True


def test_remove_writer_keeps_reader(loop, pair):
    a, b = pair
    calls = []
    loop.add_reader(a, lambda: (calls.append("read"), a.recv(10), loop.stop()))
    loop.add_writer(a, lambda: None)
    assert loop.remove_writer(a) is True
    b.send(b"x")
    loop.run_forever()
    assert calls == ["read"]
    assert loop.remove_reader(a) is True


def test_reader_exception_goes_to_handler(loop, pair, handler_calls):
    a, b = pair

    def on_readable():
        a.recv(100)
        loop.call_soon(loop.stop)
        raise ValueError("reader failed")

    loop.add_reader(a, on_readable)
    b.send(b"x")
    loop.run_forever()
    loop.remove_reader(a)
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ValueError)


def test_add_reader_invalid_fd(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, lambda: None)


def test_add_reader_object_without_fileno(loop):
    with pytest.raises(ValueError):
        loop.add_reader(object(), lambda: None)


def test_add_reader_after_close(loop, pair):
    a, _ = pair
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_reader(a, lambda: None)
    with pytest.raises(RuntimeError):
        loop.add_writer(a, lambda: None)


def test_remove_after_close_returns_false(loop, pair):
    a, _ = pair
    loop.add_reader(a, lambda: None)
    loop.close()
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        seen = set()

        def on_readable(i, sock):
            sock.recv(10)
            seen.add(i)
            loop.remove_reader(sock)
            if len(seen) == len(pairs):
                loop.stop()

        for i, (a, _) in enumerate(pairs):
            loop.add_reader(a, on_readable, i, a)
        for _, b in pairs:
            b.send(b"x")
        loop.call_later(5, loop.stop)
        loop.run_forever()
        assert seen == set(range(len(pairs)))
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_selector_unregister_drops_both_callbacks(loop, pair):
    # Twisted's asyncio reactor undoes a registration through `loop._selector.unregister`.
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "read")
    loop.add_writer(a, calls.append, "write")
    key = loop._selector.unregister(a)
    assert key.fd == a.fileno()
    assert key.events == selectors.EVENT_READ | selectors.EVENT_WRITE
    b.send(b"x")
    _run_for(loop, 0.05)
    assert calls == []
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    with pytest.raises(KeyError):
        loop._selector.unregister(a)
    # The fd can be registered again afterwards.
    loop.add_reader(a, loop.stop)
    loop.run_forever()
    assert loop.remove_reader(a) is True


@pytest.mark.parametrize("fd", [2**31, 2**40, 2**70])
@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_fd_beyond_a_c_int_is_the_selectors_overflow_error(loop, method, fd):
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C int$"):
        getattr(loop, method)(fd, lambda: None)
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is False
