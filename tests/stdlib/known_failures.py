"""Tests of CPython's test_asyncio known to fail on ferroloop (used by run_stdlib.py --loop ferroloop).

Key: the full test id as unittest prints it, e.g.
    "test.test_asyncio.test_tasks.CTaskTests.test_foo"
(a fixture error uses unittest's id, e.g. "setUpClass (test.test_asyncio.test_x.SomeTests)").
Value: the reason, either one string for every Python version, or a dict keyed by "3.11", "3.12",
"3.13" (or "all") so a test can be listed only where it fails:
    "test.test_asyncio.test_events.EPollEventLoopTests.test_bar": {"3.11": "needs child watcher"},

A listed test that fails, errors, hangs or crashes is reported as "known"; a listed test that passes
is an "unexpected pass" and fails the run, so remove it from the list.
"""

_NETWORKING = (
    "needs the networking layer (create_server/create_connection, loop._sock_sendfile_native), "
    "which the networking issue adds"
)

_SUBPROCESS = "needs subprocess support (create_subprocess_exec), which the TLS and subprocesses issue adds"

KNOWN_FAILURES: dict[str, str | dict[str, str]] = {
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_blocking_error": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel1": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel2": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_exception": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_iobuffer": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_not_a_file": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_not_available": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_not_regular_file": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_first_call": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_next_call": _NETWORKING,
    "test.test_asyncio.test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_success": _NETWORKING,
    "test.test_asyncio.test_unix_events.TestFunctional.test_add_reader_or_writer_transport_fd": _NETWORKING,
    "test.test_asyncio.test_unix_events.TestFork.test_fork_asyncio_subprocess": {
        "3.12": _SUBPROCESS,
        "3.13": _SUBPROCESS,
    },
}
