"""What code written against the stdlib loop's classes does to them, and sees back.

Test suites replace methods on ``asyncio.BaseEventLoop`` with ``mock.patch`` (asyncssh slows
``create_connection`` down this way to test its timeouts) and filter warnings by the names of the
stdlib's coroutines (pytest-asyncio ignores ``BaseEventLoop.shutdown_asyncgens`` never being
awaited). The network methods ferroloop runs are the stdlib's own, so such patches reach them.
"""

import asyncio
import socket
from unittest import mock

import pytest


def _refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "method, args",
    [
        ("create_connection", (asyncio.Protocol, "127.0.0.1", 9)),
        ("create_server", (asyncio.Protocol, "127.0.0.1", 0)),
        ("create_datagram_endpoint", (asyncio.DatagramProtocol,)),
        ("subprocess_exec", (asyncio.SubprocessProtocol, "true")),
    ],
)
def test_a_method_patched_on_base_event_loop_is_called(loop, method, args):
    calls = []

    async def replacement(self, *args, **kwargs):
        calls.append((self, args, kwargs))
        return "replaced"

    with mock.patch(f"asyncio.BaseEventLoop.{method}", replacement):
        assert loop.run_until_complete(getattr(loop, method)(*args, flags=1)) == "replaced"
    assert calls == [(loop, args, {"flags": 1})]


def test_a_mock_patched_on_base_event_loop_is_what_the_loop_has(loop):
    with mock.patch.object(asyncio.BaseEventLoop, "create_connection") as patched:
        # A mock is no descriptor: the instance attribute is the mock itself (an AsyncMock).
        assert loop.create_connection is patched
        loop.run_until_complete(loop.create_connection("a", port=1))
    patched.assert_awaited_once_with("a", port=1)


def test_the_real_method_is_back_after_the_patch(loop):
    async def never(self, *args, **kwargs):
        raise AssertionError("still patched")

    with mock.patch("asyncio.BaseEventLoop.create_connection", never):
        pass
    port = _refused_port()
    with pytest.raises(ConnectionRefusedError):
        loop.run_until_complete(loop.create_connection(asyncio.Protocol, "127.0.0.1", port))


def test_shutdown_asyncgens_is_named_as_the_stdlibs(loop):
    coro = loop.shutdown_asyncgens()
    try:
        assert coro.__qualname__ == "BaseEventLoop.shutdown_asyncgens"
    finally:
        coro.close()
