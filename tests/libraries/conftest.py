"""Fixtures for the end-to-end tests with real third-party libraries.

Like the conformance suite, every test runs twice: on the standard library's
selector loop (the reference, which proves the assertions are right) and on
ferroloop.  A test hands a coroutine function to the ``run`` fixture, which
drives it to completion in a brand new loop through ``asyncio.Runner`` and then
checks that nothing leaked: no task still pending when the coroutine returns,
no calls of the loop's exception handler (aiohttp reports an unclosed session
or connector that way) and no ``ResourceWarning`` (unclosed transports, sockets
and loops).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from pathlib import Path

import loopkinds
import pytest
import trustme
from loopkinds import LOOP_KINDS, require_ferroloop

# pytest-timeout watchdog for each test, and the (shorter) limit ``run`` puts
# on the coroutine itself so that a stuck test usually fails with a traceback.
TEST_TIMEOUT = 60
RUN_TIMEOUT = 45

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None and HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(params=LOOP_KINDS, ids=LOOP_KINDS)
def loop_kind(request):
    if request.param == "ferroloop":
        require_ferroloop()
    return request.param


@pytest.fixture
def loop_type(loop_kind):
    """The exact class of the loops the tests run on."""
    return loopkinds.loop_class(loop_kind)


@pytest.fixture
def loop_factory(loop_kind):
    return loopkinds.loop_factory(loop_kind)


class LoopRunner:
    """Runs ``await fn(*args)`` in a fresh loop and checks the loop is left clean."""

    def __init__(self, factory, loop_type):
        self._factory = factory
        self.loop_type = loop_type
        self.handler_calls: list[dict] = []
        self.resource_warnings: list[warnings.WarningMessage] = []
        self.leftover_tasks: list[asyncio.Task] = []

    def _new_loop(self):
        loop = self._factory()
        loop.set_exception_handler(lambda _loop, context: self.handler_calls.append(context))
        return loop

    def __call__(self, fn, *args, timeout=RUN_TIMEOUT, allow_handler_calls=False):
        async def main():
            running = asyncio.get_running_loop()
            assert type(running) is self.loop_type, f"running on {type(running)!r}"
            result = await asyncio.wait_for(fn(*args), timeout)
            await asyncio.sleep(0)
            me = asyncio.current_task()
            self.leftover_tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            return result

        self.handler_calls.clear()
        self.leftover_tasks = []
        # Whatever earlier tests left for the collector warns now, not inside this test's window.
        gc.collect()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with asyncio.Runner(loop_factory=self._new_loop) as runner:
                result = runner.run(main())
            # Objects that were not closed warn from __del__: make that happen now.
            gc.collect()
        self.resource_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
        if self.resource_warnings:
            shown = "\n".join(f"  {w.message}" for w in self.resource_warnings)
            pytest.fail(f"ResourceWarning (something was left unclosed):\n{shown}", pytrace=False)
        if self.handler_calls and not allow_handler_calls:
            shown = "\n".join(f"  {ctx!r}" for ctx in self.handler_calls)
            pytest.fail(f"loop exception handler called unexpectedly:\n{shown}", pytrace=False)
        if self.leftover_tasks:
            shown = "\n".join(f"  {task!r}" for task in self.leftover_tasks)
            pytest.fail(f"tasks still pending when the test coroutine returned:\n{shown}", pytrace=False)
        return result


@pytest.fixture
def run(loop_factory, loop_type):
    """``run(coro_fn, *args)``: the result of ``await coro_fn(*args)`` on the loop under test."""
    return LoopRunner(loop_factory, loop_type)


# ---------------------------------------------------------------------------
# TLS material: one throwaway CA per session, fresh contexts per test
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca):
    return tls_ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def server_ssl_ctx(tls_server_cert):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ssl_ctx(tls_ca):
    """Verifies certificates and host names, trusting only the test CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    tls_ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def untrusting_ssl_ctx():
    """Verifies certificates but trusts no CA at all (an empty trust store)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx
