"""Connections, servers, datagram endpoints, pipes, TLS and subprocesses for ``ferroloop.Loop``.

These are the stdlib loop's own methods, taken from the class ``asyncio.new_event_loop()``
returns on this platform (``asyncio.unix_events._UnixSelectorEventLoop``) and run on ferroloop,
so their arguments, checks, errors and version differences are exactly the stdlib's. They build
on what ferroloop implements natively: the fd table (``_add_reader``/``_add_writer``), the
scheduling methods, ``sock_*`` and ``getaddrinfo``.

Two have shortcuts for their commonest case, with the stdlib's function for the rest:
``_accept_connection`` (a plain server's connections) and ``create_connection`` (plain TCP to
an IP address).

Only methods that orchestrate are taken; none of them may reach selector-loop state
(``_selector``, ``_ready``, ``_scheduled``), and none may use ``super()``, which would refer to
the stdlib class. ``start_tls`` is the stdlib's too, run with ``sslproto.SSLProtocol`` naming
ferroloop's subclass (``_tls.SSLProtocol``). ``tests/stdlib`` checks the result against
CPython's own test suite.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import selectors
import socket
import types
import weakref
from asyncio import base_events, constants, events, selector_events, sslproto, trsock, unix_events
from asyncio.log import logger

from . import _tls
from ._sockets import SocketMixin
from ._transports import (
    DATAGRAM_FAMILIES,
    DatagramTransport,
    ReadPipeTransport,
    SocketTransport,
    WritePipeTransport,
    _sock_family,
    _sock_type,
)

_STDLIB_LOOP = unix_events._UnixSelectorEventLoop

# The public network methods and every private helper they call on the loop.
_TAKEN = (
    # TCP and servers
    "create_connection",
    "_connect_sock",
    "_create_connection_transport",
    "_ensure_resolved",
    "create_server",
    "_create_server_getaddrinfo",
    "connect_accepted_socket",
    "_start_serving",
    "_accept_connection",
    "_accept_connection2",
    # Unix sockets
    "create_unix_connection",
    "create_unix_server",
    # UDP
    "create_datagram_endpoint",
    # TLS ("start_tls" is taken below, making ferroloop's SSLProtocol)
    # Pipes
    "connect_read_pipe",
    "connect_write_pipe",
    # loop.sendfile, and sock_sendfile's os.sendfile() path
    "sendfile",
    "_sock_sendfile_native",
    "_sock_sendfile_native_impl",
    "_sock_sendfile_update_filepos",
    "_sock_add_cancellation_callback",
    "_sendfile_native",
    "_sendfile_fallback",
    # Subprocesses
    "subprocess_exec",
    "subprocess_shell",
    "_log_subprocess",
    "_child_watcher_callback",
)


class NetworkMixin:
    """Transports and everything that makes them, for ``ferroloop.Loop``."""

    __slots__ = ()

    def _init_network(self):
        # fd -> transport, which `_ensure_fd_no_transport` consults (the selector loop's name).
        self._transports = _TransportTable()
        # Listening Unix sockets to unlink when their server closes (3.13's cleanup_socket).
        self._unix_server_sockets = {}
        self._selector = _Registrations(self)

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        self._ensure_fd_no_transport(sock.fileno())
        cls = SocketTransport if type(sock) is socket.socket else _stream_transport(sock)
        return cls(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        if sock.family in DATAGRAM_FAMILIES and _moves_bytes_natively(sock, _DATAGRAM_IO):
            return DatagramTransport(self, sock, protocol, address, waiter, extra)
        # Another family (AF_PACKET, AF_NETLINK...), or a socket of a subclass that moves bytes
        # its own way: the stdlib's transport over the fd table.
        return selector_events._SelectorDatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        # TLS is the stdlib's SSLProtocol (an ssl.MemoryBIO state machine) over a native
        # transport; the application sees the protocol's own transport.
        self._ensure_fd_no_transport(rawsock.fileno())
        ssl_protocol = _tls.SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        _stream_transport(rawsock)(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        # The stdlib's method, less its child-watcher bookkeeping when the policy's watcher is
        # the stdlib's pidfd watcher (3.12's default): its context manager and `is_active` do
        # nothing, and asking the policy for it costs a suppressed DeprecationWarning per child.
        # Any other watcher goes through the stdlib's method.
        policy = events.get_event_loop_policy()
        watcher = getattr(policy, "_watcher", None)
        if type(watcher) is not _PIDFD_WATCHER or type(policy).get_child_watcher is not _POLICY_GET_WATCHER:
            return await _stdlib_make_subprocess_transport(
                self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs
            )
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter=waiter, extra=extra, **kwargs
        )
        watcher.add_child_handler(transp.get_pid(), self._child_watcher_callback, transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _stop_serving(self, sock):
        """A server stops listening on ``sock``; a Unix socket file it made is removed with it."""
        inode = self._unix_server_sockets.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        self._remove_reader(sock.fileno())
        sock.close()
        if path is None:
            return
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)


class _TransportTable(dict):
    """fd -> transport, held weakly, as the stdlib loop's ``WeakValueDictionary`` holds them,
    for the cost of a plain dict: nothing runs when a transport is collected. Each value is a
    weak reference; an entry whose transport is gone (or closed, which ``_ensure_fd_no_transport``
    ignores) stays until its fd is reused or the loop goes. ``get``/``[]`` answer transports."""

    __slots__ = ()

    def __setitem__(self, fd, transport):
        _dict_setitem(self, fd, weakref.ref(transport))

    def __getitem__(self, fd):
        transport = _dict_getitem(self, fd)()
        if transport is None:
            raise KeyError(fd)
        return transport

    def get(self, fd, default=None):
        ref = _dict_get(self, fd)
        transport = None if ref is None else ref()
        return default if transport is None else transport


_dict_setitem = dict.__setitem__
_dict_getitem = dict.__getitem__
_dict_get = dict.get


class _Registrations:
    """A selector-shaped view of the loop's fd table, for code that reaches for
    ``loop._selector``: ``get_key`` tells what an fd is registered for (the stdlib's datagram
    and pipe transports ask in their ``repr``), and ``unregister`` drops both of its callbacks
    (Twisted's asyncio reactor calls it to undo a registration that failed)."""

    __slots__ = ("_loop",)

    def __init__(self, loop):
        self._loop = loop

    def get_key(self, fileobj):
        fd = selectors._fileobj_to_fd(fileobj)
        reader, writer = self._loop._fd_handles(fd)
        events = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        if not events:
            raise KeyError(f"{fileobj!r} is not registered")
        return selectors.SelectorKey(fileobj, fd, events, (reader, writer))

    def unregister(self, fileobj):
        """Drop the reader and the writer of `fileobj`'s fd and return its key, or raise
        `KeyError` if it has neither, as a selector does."""
        key = self.get_key(fileobj)
        self._loop._remove_reader(key.fd)
        self._loop._remove_writer(key.fd)
        self._loop._forget_fileobj(key.fd)
        return key


# What the stdlib's stream and datagram transports call on their socket to move bytes.
_STREAM_IO = ("recv", "recv_into", "send", "sendmsg", "shutdown")
_DATAGRAM_IO = ("recvfrom", "recvfrom_into", "send", "sendto")


def _moves_bytes_natively(sock, methods):
    """Whether the native core may read and write `sock`'s fd itself: unless the socket is of
    a subclass with its own way of reading or writing, which the stdlib's transports call and
    the native core would bypass."""
    cls = type(sock)
    return cls is socket.socket or all(
        getattr(cls, m, None) is getattr(socket.socket, m, None) for m in methods
    )


def _stream_transport(sock):
    """The transport class for a stream socket: the native one, or for a socket that moves
    bytes its own way the stdlib's, over the fd table."""
    if _moves_bytes_natively(sock, _STREAM_IO):
        return SocketTransport
    return selector_events._SelectorSocketTransport


def _take(name):
    for klass in _STDLIB_LOOP.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    raise AttributeError(name)


def _rebound(func, **names):
    """The stdlib function ``func`` run with some of its module's global names resolving to
    other objects: the same code, arguments, checks and errors."""
    scope = dict(func.__globals__)
    scope.update(names)
    new = types.FunctionType(func.__code__, scope, func.__name__, func.__defaults__, func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    return new


class _OwnSSLProto:
    """``asyncio.sslproto`` as ``start_tls`` sees it: ferroloop's ``SSLProtocol`` (with its native
    steady state), and the module's own names for everything else."""

    SSLProtocol = _tls.SSLProtocol

    def __getattr__(self, name):
        return getattr(sslproto, name)


_stdlib_make_subprocess_transport = _take("_make_subprocess_transport")
# The watcher and policy method the shortcut in `_make_subprocess_transport` stands in for
# (Pythons that still have child watchers).
_PIDFD_WATCHER = getattr(unix_events, "PidfdChildWatcher", None)
_POLICY_GET_WATCHER = getattr(unix_events._UnixDefaultEventLoopPolicy, "get_child_watcher", None)


class _Taken:
    """A method of the stdlib loop class on ``NetworkMixin``, looked up on the stdlib class at
    every access, so that replacing it there (``mock.patch("asyncio.BaseEventLoop.
    create_connection", ...)``, as test suites do) reaches ferroloop's loops as it reaches the
    stdlib's. Unreplaced, it is the stdlib's function, or ``ours`` in its place."""

    __slots__ = ("name", "original", "ours")

    def __init__(self, name, ours=None):
        self.name = name
        self.original = _take(name)
        self.ours = self.original if ours is None else ours

    def __get__(self, obj, objtype=None):
        attr = getattr(_STDLIB_LOOP, self.name)
        if attr is self.original:
            attr = self.ours
        get = getattr(type(attr), "__get__", None)
        return attr if get is None else get(attr, obj, objtype)


_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_stdlib_accept_connection = _take("_accept_connection")
_ACCEPT_EMPTY = (BlockingIOError, InterruptedError, ConnectionAbortedError)
_ACCEPT_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _accept_connection(
    self,
    protocol_factory,
    sock,
    sslcontext=None,
    server=None,
    backlog=100,
    ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
    ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
):
    """The listening ``sock`` is readable: accept up to ``backlog`` connections.

    The stdlib's method, with the same logging, errors and retry after running out of fds, and
    the same task per connection (its ``_accept_connection2``, which makes the protocol and
    transport and awaits the transport's start), but for a plain TCP or Unix server accepted
    natively where the family allows. TLS servers and listening sockets of other classes take
    the stdlib's method whole.
    """
    # What the stdlib's method takes, and what serving again after running out of fds takes.
    serving = (
        protocol_factory,
        sock,
        sslcontext,
        server,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
    )
    if sslcontext or type(sock) is not socket.socket:
        return _stdlib_accept_connection(self, *serving)
    family, kind, proto = _sock_family(sock), _sock_type(sock), sock.proto
    # For the families whose addresses the core makes as the socket module does, it accepts
    # (`accept4`, the connection non-blocking already) and answers None when there is nothing
    # to accept, where `sock.accept()` raises. Otherwise `sock.accept()` less its enum
    # conversions: the same call and the same socket.
    native = family in DATAGRAM_FAMILIES
    for _ in range(backlog):
        try:
            if native:
                pair = self._accept_now(sock.fileno())
                if pair is None:
                    break
                fd, addr = pair
                mode = kind | _NONBLOCK  # no system call: the socket is non-blocking
            else:
                fd, addr = sock._accept()
                mode = kind
            try:
                conn = socket.socket(family, mode, proto, fd)
            except BaseException:
                os.close(fd)
                raise
            if self.get_debug():
                logger.debug("%r got a new connection from %r: %r", server, addr, conn)
            if not native:
                conn.setblocking(False)
        except _ACCEPT_EMPTY:
            break
        except OSError as exc:
            if exc.errno not in _ACCEPT_OUT_OF_RESOURCES:
                raise  # the loop reports it, as the stdlib's does
            # Linux keeps reporting the listening socket readable: stop reading it for a
            # while.
            self.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": trsock.TransportSocket(sock),
                }
            )
            self._remove_reader(sock.fileno())
            self.call_later(constants.ACCEPT_RETRY_DELAY, self._start_serving, *serving)
        else:
            extra = {"peername": addr}
            accept = self._accept_connection2(
                protocol_factory, conn, extra, None, server, ssl_handshake_timeout, ssl_shutdown_timeout
            )
            self.create_task(accept)


_stdlib_create_connection = _take("create_connection")
# The helpers the stdlib's `create_connection` calls that the shortcut below does not.
_CONNECT_HELPERS = tuple(
    (name, _take(name)) for name in ("_ensure_resolved", "_connect_sock", "_create_connection_transport")
)
# The keyword arguments the shortcut takes, at their defaults (`family` may be anything), of
# those this Python's `create_connection` has (3.11 has no `all_errors`: the stdlib's
# signature refuses it).
_CONNECT_PARAMETERS = inspect.signature(_stdlib_create_connection).parameters
_CONNECT_DEFAULTS = {
    name: value
    for name, value in {
        "ssl": None,
        "proto": 0,
        "flags": 0,
        "sock": None,
        "local_addr": None,
        "server_hostname": None,
        "ssl_handshake_timeout": None,
        "ssl_shutdown_timeout": None,
        "happy_eyeballs_delay": None,
        "interleave": None,
        "all_errors": False,
    }.items()
    if name in _CONNECT_PARAMETERS
}


_SOCK_CONNECT = SocketMixin.sock_connect


def _connects_plainly(loop, host, kwargs):
    """Whether ``create_connection(host=host, **kwargs)`` is a plain TCP connection to one
    address, with the stdlib's helpers as they are: nothing the shortcut leaves out matters."""
    if host is None:
        return False
    for name, value in kwargs.items():
        if name != "family" and _CONNECT_DEFAULTS.get(name, ...) != value:
            return False
    loop_attrs = vars(loop)
    for name, original in _CONNECT_HELPERS:
        if name in loop_attrs or getattr(_STDLIB_LOOP, name) is not original:
            return False
    return True


@functools.wraps(_stdlib_create_connection)
async def _create_connection(self, protocol_factory, host=None, port=None, **kwargs):
    """The stdlib's ``create_connection``, with its steps for a plain TCP connection to an IP
    address (``open_connection("127.0.0.1", port)``) run in one frame: the same address, socket,
    calls (``sock_connect``, ``_make_socket_transport``), errors and debug log, without the
    frames of ``_ensure_resolved``, ``_connect_sock`` and ``_create_connection_transport``.
    Anything else (TLS, a name to resolve, ``sock``, ``local_addr``, Happy Eyeballs) is the
    stdlib's method."""
    info = None
    if _connects_plainly(self, host, kwargs):
        info = base_events._ipaddr_info(host, port, kwargs.get("family", 0), socket.SOCK_STREAM, 0)
    if info is None:
        return await _stdlib_create_connection(self, protocol_factory, host, port, **kwargs)
    family, type_, proto, _, address = info
    # `_connect_sock`: a failure to make or connect the socket closes it and is raised as is
    # (the stdlib raises a single address's exception unchanged). The socket is made
    # non-blocking (`setblocking(False)` there) and needs none of `sock_connect`'s checks, nor
    # its resolving, unless `sock_connect` was replaced.
    sock = None
    try:
        sock = socket.socket(family=family, type=type_ | _NONBLOCK, proto=proto)
        if "sock_connect" in vars(self) or type(self).sock_connect is not _SOCK_CONNECT:
            await self.sock_connect(sock, address)
        else:
            await self._sock_connect_resolved(sock, address)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    # `_create_connection_transport`.
    try:
        protocol = protocol_factory()
    except BaseException:
        sock.close()
        raise
    waiter = self.create_future()
    transport = self._make_socket_transport(sock, protocol, waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    if self.get_debug():
        logger.debug(
            "%r connected to %s:%r: (%r, %r)",
            transport.get_extra_info("socket"),
            host,
            port,
            transport,
            protocol,
        )
    return transport, protocol


for _name in _TAKEN:
    setattr(NetworkMixin, _name, _Taken(_name))
del _name
NetworkMixin._accept_connection = _Taken("_accept_connection", _accept_connection)
NetworkMixin.create_connection = _Taken("create_connection", _create_connection)
NetworkMixin.start_tls = _Taken("start_tls", _rebound(_take("start_tls"), sslproto=_OwnSSLProto()))
