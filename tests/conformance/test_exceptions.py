"""Exception handler API: set/get/call/default_exception_handler."""

import asyncio
import contextvars
import gc
import logging
import socket
import struct
import sys

import pytest
from _looputil import run_briefly


def test_get_exception_handler_roundtrip(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_exception_handler_non_callable(loop):
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)
    with pytest.raises(TypeError):
        loop.set_exception_handler("handler")


def test_handler_called_with_loop_and_context(loop):
    calls = []

    def handler(*args):
        calls.append(args)

    def bad():
        raise ValueError("boom")

    loop.set_exception_handler(handler)
    handle = loop.call_soon(bad)
    run_briefly(loop)
    assert len(calls) == 1
    lp, ctx = calls[0]
    assert lp is loop
    assert isinstance(ctx, dict)
    assert {"message", "exception", "handle"} <= set(ctx)
    assert isinstance(ctx["exception"], ValueError)
    assert str(ctx["exception"]) == "boom"
    assert ctx["handle"] is handle
    assert "Exception in callback" in ctx["message"]


def test_timer_exception_reports_timer_handle(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))

    def bad():
        raise KeyError("timer")

    handle = loop.call_later(0.001, bad)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(calls) == 1
    assert calls[0]["handle"] is handle
    assert isinstance(calls[0]["exception"], KeyError)


def test_call_exception_handler_direct(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    ctx = {"message": "custom", "extra": 1}
    loop.call_exception_handler(ctx)
    assert calls == [(loop, ctx)]


def test_default_handler_logs(loop, caplog):
    loop.set_exception_handler(None)

    def bad():
        raise ValueError("logged-by-default")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert "Exception in callback" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


def test_call_exception_handler_default_logs_message(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "a custom message"})
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1
    assert "a custom message" in messages[0]


def test_default_exception_handler_method(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct default", "exception": RuntimeError("x")})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert "direct default" in records[0].getMessage()
    assert records[0].exc_info[0] is RuntimeError


def test_failing_handler_falls_back_to_default(loop, caplog):
    def broken(lp, ctx):
        raise RuntimeError("handler is broken")

    loop.set_exception_handler(broken)

    def bad():
        raise ValueError("original")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert "Unhandled error in exception handler" in records[0].getMessage()
    assert records[0].exc_info[0] is RuntimeError
    # The loop survived the broken handler.
    assert loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_handler_base_exceptions_propagate(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type()

    loop.set_exception_handler(handler)
    with pytest.raises(exc_type):
        loop.call_exception_handler({"message": "x"})


def test_exception_in_callback_does_not_skip_others(loop, handler_calls):
    calls = []

    def bad():
        raise ValueError

    loop.call_soon(bad)
    loop.call_soon(calls.append, "after")
    run_briefly(loop)
    assert calls == ["after"]
    assert len(handler_calls) == 1


def test_unretrieved_task_exception_reported(loop, handler_calls):
    async def fail():
        raise ValueError("never retrieved")

    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.sleep(0.001))
    assert task.done()
    del task
    gc.collect()
    matching = [c for c in handler_calls if isinstance(c.get("exception"), ValueError)]
    assert len(matching) == 1
    assert "exception was never retrieved" in matching[0]["message"]


def test_unretrieved_future_exception_reported(loop, handler_calls):
    fut = loop.create_future()
    fut.set_exception(KeyError("future"))
    del fut
    gc.collect()
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], KeyError)
    assert "future" in handler_calls[0]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the handler runs in the handle's context from 3.12")
def test_custom_handler_runs_in_handle_context(loop):
    var = contextvars.ContextVar("var", default="unset")
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(var.get()))
    ctx = contextvars.Context()
    ctx.run(var.set, "handle-context")

    def bad():
        raise ValueError

    loop.call_soon(bad, context=ctx)
    run_briefly(loop)
    assert seen == ["handle-context"]


def test_handler_can_be_changed_while_running(loop):
    first, second = [], []

    def bad():
        raise ValueError

    def swap():
        loop.set_exception_handler(lambda lp, ctx: second.append(ctx))

    loop.set_exception_handler(lambda lp, ctx: first.append(ctx))
    loop.call_soon(bad)
    loop.call_soon(swap)
    loop.call_soon(bad)
    run_briefly(loop)
    assert len(first) == 1
    assert len(second) == 1


def _handled_exception():
    """The exception being handled where this is called (`sys.exception()` from 3.11)."""
    return sys.exc_info()[1]


def test_handler_runs_while_the_callback_error_is_being_handled(loop):
    # The stdlib calls the handler inside the `except` that caught the callback's error, so
    # `logging.exception`, `traceback.print_exc` and implicit chaining see it there.
    seen = []

    def handler(lp, ctx):
        seen.append((ctx["exception"], _handled_exception()))
        try:
            raise RuntimeError("in handler")
        except RuntimeError as e:
            seen.append(e.__context__)

    def bad():
        raise ZeroDivisionError("callback")

    loop.set_exception_handler(handler)
    loop.call_soon(bad)
    run_briefly(loop)
    (exc, handled), context = seen
    assert isinstance(exc, ZeroDivisionError)
    assert handled is exc
    assert context is exc
    assert _handled_exception() is None


def test_fd_callback_error_is_being_handled_in_handler(loop):
    a, b = socket.socketpair()
    seen = []

    def handler(lp, ctx):
        seen.append((ctx["exception"], _handled_exception()))
        lp.remove_reader(a)

    def bad():
        raise KeyError("reader")

    try:
        loop.set_exception_handler(handler)
        b.send(b"x")
        loop.add_reader(a, bad)
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()
    [(exc, handled)] = seen
    assert isinstance(exc, KeyError)
    assert handled is exc


def test_transport_fatal_error_is_being_handled_in_handler(loop):
    # A protocol whose data_received raises: the stdlib's transport reports it from inside the
    # `except` that caught it.
    seen = []

    class Failing(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            raise ValueError("protocol")

    async def main():
        lost = loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                transport.write(b"hello")

            def connection_lost(self, exc):
                if not lost.done():
                    lost.set_result(None)

        loop.set_exception_handler(lambda lp, ctx: seen.append((ctx["exception"], _handled_exception())))
        server = await loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(Failing, "127.0.0.1", port)
        await asyncio.wait_for(lost, 5)
        transport.close()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    [(exc, handled)] = seen
    assert isinstance(exc, ValueError)
    assert handled is exc


def test_debug_log_of_a_quiet_transport_error_has_its_traceback(loop, caplog):
    # In debug mode a peer going away is logged with `exc_info=True`: the traceback of the
    # error being handled.
    async def main():
        lost = loop.create_future()

        class Client(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        transport, _ = await loop.create_connection(Client, *srv.getsockname())
        conn, _ = srv.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        srv.close()
        exc = await asyncio.wait_for(lost, 5)
        transport.close()
        return exc

    loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        exc = loop.run_until_complete(main())
    assert isinstance(exc, ConnectionResetError)
    [record] = [r for r in caplog.records if r.exc_info and "Fatal read error" in r.getMessage()]
    assert record.exc_info[1] is exc
