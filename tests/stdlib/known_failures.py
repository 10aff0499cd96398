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

_SELECTOR_INTERNALS = (
    "patches loop._run_once and reads loop._selector, internals of the selector loop; "
    "ferroloop's native run loop has neither"
)


def _needs(method: str) -> str:
    return f"needs loop.{method}() (transports), which the networking issue adds"


def _needs_subprocess(method: str) -> str:
    return f"needs loop.{method}(), which the TLS and subprocesses issue adds"


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
    "test.test_asyncio.test_events.EPollEventLoopTests.test_bidirectional_pty": _needs("connect_read_pipe"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_connect_accepted_socket": _needs(
        "connect_accepted_socket"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_connect_accepted_socket_ssl_timeout_for_plain_socket": _needs(
        "connect_accepted_socket"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_connection": _needs("create_connection"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_connection_local_addr": _needs(
        "create_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_connection_local_addr_in_use": _needs(
        "create_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_connection_local_addr_nomatch_family": _needs(
        "create_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_connection_local_addr_skip_different_family": _needs(
        "create_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_datagram_endpoint": _needs(
        "create_datagram_endpoint"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_datagram_endpoint_ipv6": _needs(
        "create_datagram_endpoint"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_datagram_endpoint_sock": _needs(
        "create_datagram_endpoint"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server": _needs("create_server"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_addr_in_use": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_dual_stack": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_multiple_hosts_ipv4": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_multiple_hosts_ipv6": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_reuse_port": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_sock": _needs("create_server"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_ssl": _needs("create_server"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_ssl_match_failed": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_ssl_verified": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_ssl_verify_failed": _needs(
        "create_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_server_trsock": {
        "3.12": _needs("create_server"),
        "3.13": _needs("create_server"),
    },
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_ssl_connection": _needs(
        "create_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_ssl_unix_connection": _needs(
        "create_unix_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_unix_connection": _needs(
        "create_unix_connection"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_unix_server": _needs("create_unix_server"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_unix_server_path_socket_error": _needs(
        "create_unix_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_unix_server_ssl": _needs(
        "create_unix_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_unix_server_ssl_verified": _needs(
        "create_unix_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_create_unix_server_ssl_verify_failed": _needs(
        "create_unix_server"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_datagram_send_to_non_listening_address": {
        "3.13": _needs("create_datagram_endpoint")
    },
    "test.test_asyncio.test_events.EPollEventLoopTests.test_read_pipe": _needs("connect_read_pipe"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_read_pty_output": _needs("connect_read_pipe"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_server_close": _needs("create_server"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_ssl_connect_accepted_socket": _needs(
        "connect_accepted_socket"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_close_after_finish": _needs_subprocess(
        "subprocess_shell"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_close_client_stream": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_exec": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_exec_invalid_args": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_exitcode": _needs_subprocess(
        "subprocess_shell"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_interactive": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_kill": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_send_signal": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_shell": _needs_subprocess(
        "subprocess_shell"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_shell_invalid_args": _needs_subprocess(
        "subprocess_shell"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_stderr": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_stderr_redirect_to_stdout": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_terminate": _needs_subprocess(
        "subprocess_exec"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_subprocess_wait_no_same_group": _needs_subprocess(
        "subprocess_shell"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_timeout_rounding": _SELECTOR_INTERNALS,
    "test.test_asyncio.test_events.EPollEventLoopTests.test_unclosed_pipe_transport": _needs(
        "connect_read_pipe"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_write_pipe": _needs("connect_write_pipe"),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_write_pipe_disconnect_on_close": _needs(
        "connect_write_pipe"
    ),
    "test.test_asyncio.test_events.EPollEventLoopTests.test_write_pty": _needs("connect_write_pipe"),
    "test.test_asyncio.test_events.TestServer.test_get_loop": _needs("create_server"),
}
