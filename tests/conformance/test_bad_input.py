"""Bad input to the loop's methods gets the stdlib's answer.

Each case calls one method with one odd argument on a fresh loop and records what happens: the
exception type raised at once, or, for a coroutine, what awaiting it (briefly) gives. The
expected outcome is the same case on a fresh stdlib loop, so on the stdlib param these tests
check that the outcomes are reproducible, and on the ferroloop param that ferroloop's match.

Left out are cases where the stdlib accepts the input and only fails later, inside the loop
(`call_at` with a string deadline breaks its timer heap); ferroloop refuses those at once.
"""

import asyncio
import gc
import os
import socket

import pytest
from loopkinds import loop_factory as factory_of


class BadIndex:
    def __index__(self):
        raise ZeroDivisionError("__index__")


class BadFileno:
    def fileno(self):
        raise ZeroDivisionError("fileno")


class NegativeFileno:
    def fileno(self):
        return -5


BAD = {
    "None": None,
    "minus_one": -1,
    "huge": 2**70,
    "minus_huge": -(2**70),
    "fraction": 1.5,
    "nan": float("nan"),
    "inf": float("inf"),
    "str": "x",
    "bytes": b"x",
    "bad_index": BadIndex(),
    "bad_fileno": BadFileno(),
    "negative_fileno": NegativeFileno(),
    "object": object(),
    "tuple": (),
}


def _callback(*args):
    pass


CALLS = {
    "call_soon": lambda loop, sock, bad: loop.call_soon(bad),
    "call_soon_context": lambda loop, sock, bad: loop.call_soon(_callback, context=bad),
    "call_later": lambda loop, sock, bad: loop.call_later(bad, _callback),
    "call_soon_threadsafe": lambda loop, sock, bad: loop.call_soon_threadsafe(bad),
    "add_reader": lambda loop, sock, bad: loop.add_reader(bad, _callback),
    "add_writer": lambda loop, sock, bad: loop.add_writer(bad, _callback),
    "remove_reader": lambda loop, sock, bad: loop.remove_reader(bad),
    "remove_writer": lambda loop, sock, bad: loop.remove_writer(bad),
    "create_task": lambda loop, sock, bad: loop.create_task(bad),
    "set_task_factory": lambda loop, sock, bad: loop.set_task_factory(bad),
    "set_exception_handler": lambda loop, sock, bad: loop.set_exception_handler(bad),
    "call_exception_handler": lambda loop, sock, bad: loop.call_exception_handler(bad),
    "run_in_executor": lambda loop, sock, bad: loop.run_in_executor(None, bad),
    "set_default_executor": lambda loop, sock, bad: loop.set_default_executor(bad),
    "add_signal_handler": lambda loop, sock, bad: loop.add_signal_handler(bad, _callback),
    "remove_signal_handler": lambda loop, sock, bad: loop.remove_signal_handler(bad),
    "run_until_complete": lambda loop, sock, bad: loop.run_until_complete(bad),
    "sock_recv_size": lambda loop, sock, bad: loop.sock_recv(sock, bad),
    "sock_recv_sock": lambda loop, sock, bad: loop.sock_recv(bad, 10),
    "sock_recv_into": lambda loop, sock, bad: loop.sock_recv_into(sock, bad),
    "sock_recv_into_sock": lambda loop, sock, bad: loop.sock_recv_into(bad, bytearray(10)),
    "sock_recvfrom_sock": lambda loop, sock, bad: loop.sock_recvfrom(bad, 10),
    "sock_recvfrom_into_sock": lambda loop, sock, bad: loop.sock_recvfrom_into(bad, bytearray(10)),
    "sock_sendall_sock": lambda loop, sock, bad: loop.sock_sendall(bad, b"x"),
    "sock_sendto_sock": lambda loop, sock, bad: loop.sock_sendto(bad, b"x", ("127.0.0.1", 9)),
    "sock_connect_sock": lambda loop, sock, bad: loop.sock_connect(bad, ("127.0.0.1", 9)),
    "sock_accept_sock": lambda loop, sock, bad: loop.sock_accept(bad),
    "sock_sendfile_sock": lambda loop, sock, bad: loop.sock_sendfile(bad, open(os.devnull, "rb")),
    "sock_sendall": lambda loop, sock, bad: loop.sock_sendall(sock, bad),
    "sock_connect": lambda loop, sock, bad: loop.sock_connect(sock, bad),
    "sock_recvfrom": lambda loop, sock, bad: loop.sock_recvfrom(sock, bad),
    "sock_sendfile_offset": lambda loop, sock, bad: loop.sock_sendfile(sock, open(os.devnull, "rb"), bad),
    "getaddrinfo_host": lambda loop, sock, bad: loop.getaddrinfo(bad, 80),
    "getaddrinfo_port": lambda loop, sock, bad: loop.getaddrinfo("127.0.0.1", bad),
    "getaddrinfo_flags": lambda loop, sock, bad: loop.getaddrinfo("127.0.0.1", 80, flags=bad),
    "getnameinfo": lambda loop, sock, bad: loop.getnameinfo(bad),
    "create_connection_port": lambda loop, sock, bad: loop.create_connection(
        asyncio.Protocol, "127.0.0.1", bad
    ),
    "create_server_backlog": lambda loop, sock, bad: loop.create_server(
        asyncio.Protocol, "127.0.0.1", 0, backlog=bad
    ),
    "create_datagram_local_addr": lambda loop, sock, bad: loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=bad
    ),
    "create_unix_connection": lambda loop, sock, bad: loop.create_unix_connection(asyncio.Protocol, bad),
    "create_connection_host": lambda loop, sock, bad: loop.create_connection(asyncio.Protocol, bad, 9),
    "create_connection_family": lambda loop, sock, bad: loop.create_connection(
        asyncio.Protocol, "127.0.0.1", 9, family=bad
    ),
    "create_connection_local_addr": lambda loop, sock, bad: loop.create_connection(
        asyncio.Protocol, "127.0.0.1", 9, local_addr=bad
    ),
    "create_connection_server_hostname": lambda loop, sock, bad: loop.create_connection(
        asyncio.Protocol, "127.0.0.1", 9, server_hostname=bad
    ),
    "create_connection_sock": lambda loop, sock, bad: loop.create_connection(asyncio.Protocol, sock=bad),
    "create_server_host": lambda loop, sock, bad: loop.create_server(asyncio.Protocol, bad, 0),
    "create_server_port": lambda loop, sock, bad: loop.create_server(asyncio.Protocol, "127.0.0.1", bad),
    "create_server_family": lambda loop, sock, bad: loop.create_server(
        asyncio.Protocol, "127.0.0.1", 0, family=bad
    ),
    "create_server_sock": lambda loop, sock, bad: loop.create_server(asyncio.Protocol, sock=bad),
    "create_datagram_remote_addr": lambda loop, sock, bad: loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=bad
    ),
    "create_datagram_family": lambda loop, sock, bad: loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0), family=bad
    ),
    "create_datagram_sock": lambda loop, sock, bad: loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, sock=bad
    ),
    "create_unix_server_path": lambda loop, sock, bad: loop.create_unix_server(asyncio.Protocol, bad),
    "connect_accepted_socket": lambda loop, sock, bad: loop.connect_accepted_socket(asyncio.Protocol, bad),
    "connect_read_pipe": lambda loop, sock, bad: loop.connect_read_pipe(asyncio.Protocol, bad),
    "connect_write_pipe": lambda loop, sock, bad: loop.connect_write_pipe(asyncio.Protocol, bad),
    "sock_sendto_address": lambda loop, sock, bad: loop.sock_sendto(sock, b"x", bad),
    "sendfile_transport": lambda loop, sock, bad: loop.sendfile(bad, open(os.devnull, "rb")),
    "start_tls_transport": lambda loop, sock, bad: loop.start_tls(bad, asyncio.Protocol(), None),
    "getaddrinfo_family": lambda loop, sock, bad: loop.getaddrinfo("127.0.0.1", 80, family=bad),
    "getaddrinfo_type": lambda loop, sock, bad: loop.getaddrinfo("127.0.0.1", 80, type=bad),
    "run_in_executor_executor": lambda loop, sock, bad: loop.run_in_executor(bad, _callback),
    "subprocess_exec": lambda loop, sock, bad: loop.subprocess_exec(asyncio.SubprocessProtocol, bad),
}


_getaddrinfo = socket.getaddrinfo


def _getaddrinfo_without_lookups(host, port, family=0, type=0, proto=0, flags=0):
    # A name ("x") fails as an unknown one at once: asking the machine's resolver could take
    # longer than a case waits, on one loop and not the other.
    return _getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)


def _outcome(make_loop, call, bad):
    """What `call` does with `bad` on a fresh loop: an exception type's name, or 'ok'."""
    loop = make_loop()
    sock = socket.socket()
    sock.setblocking(False)
    result = None
    try:
        try:
            result = call(loop, sock, bad)
            if asyncio.iscoroutine(result) or asyncio.isfuture(result):
                loop.run_until_complete(asyncio.wait_for(result, 1.0))
            outcome = "ok"
        except BaseException as exc:  # the point is which one
            outcome = type(exc).__name__
        if isinstance(result, (asyncio.Handle, asyncio.Task)):
            result.cancel()
        # Whatever was accepted must not break the loop.
        loop.run_until_complete(asyncio.sleep(0))
        return outcome
    finally:
        sock.close()
        loop.close()


# The stdlib's pipe transports fail in `__del__` for some of these objects (a `fileno()` that
# raises leaves `_closing` unset; an object without `close()`), on the reference loop too.
_STDLIB_FAILS_IN_DEL = {"connect_read_pipe", "connect_write_pipe"}


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(m, marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"))
        if m in _STDLIB_FAILS_IN_DEL
        else m
        for m in sorted(CALLS)
    ],
)
def test_bad_input_gets_the_stdlibs_answer(loop_kind, method, tmp_path, monkeypatch):
    # A valid relative path ("x") makes a Unix socket file: keep it out of the working tree.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(socket, "getaddrinfo", _getaddrinfo_without_lookups)
    call = CALLS[method]
    mine, reference = factory_of(loop_kind), asyncio.SelectorEventLoop
    differ = {}
    for name, bad in BAD.items():
        expected = _outcome(reference, call, bad)
        got = _outcome(mine, call, bad)
        if method in _STDLIB_FAILS_IN_DEL:
            gc.collect()  # the half-made transports are finalized within this test
        if got != expected:
            differ[name] = f"{got} (the stdlib: {expected})"
    assert not differ
