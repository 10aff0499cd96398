"""ferroloop-only: getaddrinfo answers numeric queries on the loop's thread, with no executor.

The stdlib loop sends every query to the default executor, so these tests cannot run on it; that
the answers themselves are identical is checked on both loops in
tests/conformance/test_getaddrinfo.py.
"""

import socket
import threading

import ferroloop
import pytest


@pytest.fixture
def loop():
    lp = ferroloop.new_event_loop()
    yield lp
    lp.run_until_complete(lp.shutdown_default_executor())
    lp.close()


@pytest.mark.parametrize(
    "host, port",
    [("127.0.0.1", 80), ("::1", "443"), (None, 0), (b"10.0.0.1", b"8080"), ("fe80::1%lo", None)],
)
def test_numeric_query_needs_no_executor(loop, host, port):
    threads_before = threading.active_count()
    result = loop.run_until_complete(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    assert result == socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    assert loop._default_executor is None
    assert threading.active_count() == threads_before


@pytest.mark.parametrize("host, port", [("localhost", 80), ("127.0.0.1", "http"), ("", 80)])
def test_other_queries_go_to_the_executor(loop, host, port):
    async def resolve():
        try:
            return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return None

    loop.run_until_complete(resolve())
    assert loop._default_executor is not None


def test_numeric_query_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level("DEBUG", logger="asyncio"):
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80))
    assert any("Getting address info 127.0.0.1:80 took" in r.getMessage() for r in caplog.records)
