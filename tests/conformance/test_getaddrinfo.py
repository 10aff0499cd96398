"""getaddrinfo / getnameinfo give exactly what the socket module gives, numeric or not."""

import logging
import socket

import pytest

AI = socket.AddressInfo

QUERIES = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "8080", {"type": socket.SOCK_STREAM}),
    ("127.0.0.1", None, {}),
    ("127.0.0.1", 0, {"family": socket.AF_INET, "type": socket.SOCK_DGRAM}),
    ("0.0.0.0", 0, {"flags": AI.AI_PASSIVE}),
    ("127.1", 80, {}),  # inet_aton() shorthand: numeric too
    ("::1", 443, {}),
    ("::1", b"443", {"type": socket.SOCK_STREAM, "proto": socket.IPPROTO_TCP}),
    ("::ffff:127.0.0.1", 1, {"family": socket.AF_INET6}),
    ("fe80::1%lo", 80, {}),
    (b"127.0.0.1", b"80", {}),
    (None, 80, {}),
    (None, 0, {"flags": AI.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    (None, "1234", {"family": socket.AF_INET}),
    ("127.0.0.1", 80, {"flags": AI.AI_CANONNAME}),
    ("127.0.0.1", 80, {"flags": AI.AI_NUMERICHOST | AI.AI_NUMERICSERV}),
    ("::1", 80, {"flags": AI.AI_V4MAPPED | AI.AI_ALL, "family": socket.AF_INET6}),
    ("127.0.0.1", 80, {"flags": AI.AI_ADDRCONFIG}),
    # Not numeric, or errors: these go to the resolver, whose exact answer or error comes back.
    ("localhost", 80, {"family": socket.AF_INET}),
    ("127.0.0.1", "http", {"type": socket.SOCK_STREAM}),
    ("", 80, {}),
    ("127.0.0.1", 80, {"family": socket.AF_INET6}),
    ("1.2.3.4.5", 80, {"flags": AI.AI_NUMERICHOST}),
    ("127.0.0.1", 70000, {}),
    ("127.0.0.1", "nope-not-a-service", {}),
    ("127.0.0.1", 80, {"type": socket.SOCK_RAW}),
    ("127.0.0.1", 80, {"flags": -1}),  # EAI_BADFLAGS, numeric host or not
    ("127.0.0.1", 80, {"flags": 0x7FFFFFFF}),
    ("127.0.0.1", 80, {"flags": 1.5}),
]


def _outcome(call):
    try:
        return "ok", call()
    except Exception as exc:
        return type(exc), getattr(exc, "errno", None), str(exc)


@pytest.mark.parametrize("host, port, kwargs", QUERIES, ids=[repr(q[:2]) + repr(q[2]) for q in QUERIES])
def test_getaddrinfo_matches_socket_module(loop, host, port, kwargs):
    expected = _outcome(lambda: socket.getaddrinfo(host, port, **kwargs))

    async def resolve():
        return await loop.getaddrinfo(host, port, **kwargs)

    assert _outcome(lambda: loop.run_until_complete(resolve())) == expected


def test_getaddrinfo_returns_a_fresh_list(loop):
    first = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80))
    first.clear()
    assert loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80)) == socket.getaddrinfo("127.0.0.1", 80)


def test_getnameinfo(loop):
    result = loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST))
    assert result == socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_getaddrinfo_after_executor_shutdown_raises(loop, host):
    loop.run_until_complete(loop.shutdown_default_executor())

    async def main():
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            await loop.getaddrinfo(host, 80)

    loop.run_until_complete(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", None])
def test_debug_mode_logs_both_lines_of_a_numeric_query(loop, caplog, host):
    loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        infos = loop.run_until_complete(loop.getaddrinfo(host, 80, type=socket.SOCK_STREAM))
    assert infos == socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    query = f"{host}:80, type=<SocketKind.SOCK_STREAM: 1>"
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert messages[0] == f"Get address info {query}", messages
    assert messages[1].startswith(f"Getting address info {query} took "), messages
    assert messages[1].endswith(f": {infos!r}"), messages
