"""The socket transports of ``ferroloop.Loop``: streams (TCP, Unix) and datagrams (UDP, Unix).

``SocketTransport`` is a real ``asyncio.Transport``; the per-byte work (reads into the protocol,
sends and the write buffer) is done by its native ``StreamCore`` (``src/transport/``), whose
methods it exposes directly as its own ``write``/``writelines``/``is_closing``/... so a call
costs no Python frame. What stays here is what happens once per connection or on errors:
``connection_made``/``connection_lost``, closing, fatal errors, flow-control callbacks (the
stdlib's ``_FlowControlMixin``), ``get_extra_info`` and the hooks ``loop.sendfile``,
``start_tls`` and sslproto use.

``DatagramTransport`` is the same split for datagram sockets, over a native ``DatagramCore``,
and ``ReadPipeTransport``/``WritePipeTransport`` for pipes, over ``ReadPipeCore``/``WritePipeCore``.
"""

from __future__ import annotations

import _socket
import errno
import inspect
import os
import socket
import stat
import sys
import warnings
from asyncio import base_events, constants, futures, protocols, streams, transports, trsock
from asyncio.log import logger

from ._core import (
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    MAX_READ,
    DatagramCore,
    ReadPipeCore,
    StreamCore,
    WritePipeCore,
)
from ._sockets import _INET_FAMILIES, _sock_family, _sock_type


def _set_nodelay(sock):
    # As the stdlib's: only a socket made as TCP explicitly (`proto == IPPROTO_TCP`, as those
    # from getaddrinfo and their accepted ones are); one from `socket.socket()` has proto 0.
    if isinstance(sock, _socket.socket):
        family, kind = _sock_family(sock), _sock_type(sock)
    else:
        family, kind = sock.family, sock.type
    if family in _INET_FAMILIES and kind == socket.SOCK_STREAM and sock.proto == socket.IPPROTO_TCP:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


_set_result_unless_cancelled = futures._set_result_unless_cancelled


def _is_stdlib(func, qualname):
    """Whether ``func`` is the function ``asyncio.streams`` defines as ``qualname``."""
    module = getattr(func, "__module__", None)
    return module == "asyncio.streams" and getattr(func, "__qualname__", None) == qualname


def _stdlib_stream_methods():
    """Whether ``StreamReaderProtocol.data_received`` and ``_stream_reader`` and
    ``StreamReader.feed_data`` and ``_wakeup_waiter`` are the stdlib's own; the core asks again
    whenever either class changes (``src/transport/reader.rs``)."""
    prop = streams.StreamReaderProtocol.__dict__.get("_stream_reader")
    return (
        _is_stdlib(streams.StreamReaderProtocol.data_received, "StreamReaderProtocol.data_received")
        and isinstance(prop, property)
        and _is_stdlib(prop.fget, "StreamReaderProtocol._stream_reader")
        and _is_stdlib(streams.StreamReader.feed_data, "StreamReader.feed_data")
        and _is_stdlib(streams.StreamReader._wakeup_waiter, "StreamReader._wakeup_waiter")
    )


_DETACH_IN_DEL = sys.version_info >= (3, 13)

# 3.13's Server tracks its clients (for close_clients), so it is told which transport comes and goes.
if len(inspect.signature(base_events.Server._attach).parameters) > 1:

    def _attach(server, transport):
        server._attach(transport)

    def _detach(server, transport):
        server._detach(transport)

else:

    def _attach(server, transport):
        server._attach()

    def _detach(server, transport):
        server._detach()


def _report_fatal_error(transport, exc, message, quiet):
    """Reports an error that ends ``transport`` as the stdlib does: a ``quiet`` one (a peer going
    away, routine for a server) only in debug mode's log, any other to the exception handler."""
    if quiet:
        if transport._loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=True)
    else:
        transport._loop.call_exception_handler(
            {
                "message": message,
                "exception": exc,
                "transport": transport,
                "protocol": transport._protocol,
            }
        )


def _whole_bytes(limit):
    """A write-buffer limit as the core's byte count: the stdlib accepts any number, and an
    integer size compares with ``limit`` exactly as with its floor (capped, for ``inf``)."""
    return sys.maxsize if limit >= sys.maxsize else int(limit // 1)


class _ReadSize:
    """``max_size``, the most one read takes (what the stdlib's transports pass to ``recv``,
    ``recvfrom`` or ``os.read``): 256 KiB, or what was set on the transport, which its core then
    reads with. Protocols that take their data through ``get_buffer`` are not affected, as with
    the stdlib."""

    def __get__(self, transport, owner=None):
        if transport is None:
            return MAX_READ
        return transport.__dict__.get("_max_size", MAX_READ)

    def __set__(self, transport, size):
        transport._core.set_max_read(size)
        transport.__dict__["_max_size"] = size


class _CoreReading:
    """Reading control over a native core (``is_reading``/``pause_reading``/``resume_reading``,
    the last two returning whether anything changed) and start-up, shared by the socket and
    read pipe transports."""

    __slots__ = ()

    def is_closing(self):
        return self._core.is_closing()

    def is_reading(self):
        return self._core.is_reading()

    @property
    def _paused(self):
        # The stdlib transports' attribute, which some code reads.
        return self._core.paused

    def pause_reading(self):
        if self._core.pause_reading() and self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._core.resume_reading() and self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _schedule_start(self, loop, protocol, waiter):
        """The stdlib's start-up order: ``connection_made``, then reading (so nothing arrives
        before it), then the creator's waiter."""
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._core.start)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)


class _CoreSocketTransport(_CoreReading, transports._FlowControlMixin):
    """What the stream and datagram socket transports share, over a native core that has
    ``begin_close``/``force_close``/``pause_reading``/``resume_reading`` and ``polling``: the
    socket's extra info, ``repr``, reading control, closing and fatal errors."""

    max_size = _ReadSize()

    _sock = None
    _core = None
    _server = None  # the Server a stream transport was accepted by

    def _init_socket(self, sock):
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._sock_fd = sock.fileno()

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            reading, writing = self._core.polling
            info.append("read=polling" if reading else "read=idle")
            bufsize = self._core.get_write_buffer_size()
            info.append(f"write=<{'polling' if writing else 'idle'}, bufsize={bufsize}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._core.detach()
            self._sock.close()
            # From 3.13 on the stdlib's transport also tells its server it is gone (before, a
            # collected transport stays counted, and nothing is woken in a finalizer).
            if _DETACH_IN_DEL and self._server is not None:
                _detach(self._server, self)

    # The core's methods on the class too, for code that calls them through it
    # (``SocketTransport.write(t, data)``, ``super().write(...)``); instances bind them directly.

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_protocol(self):
        return self._protocol

    def close(self):
        if self._core.begin_close():
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        self._force_close(None)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        _report_fatal_error(self, exc, message, quiet=isinstance(exc, OSError))
        self._force_close(exc)

    def _force_close(self, exc):
        if self._core.force_close():
            self._loop.call_soon(self._call_connection_lost, exc)


class SocketTransport(_CoreSocketTransport, transports.Transport):
    """A stream socket's transport."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        fd = sock.fileno()
        core = self._core = StreamCore(loop, fd, self)
        # The hot methods are the core's own, bound on the instance.
        self.write = core.write
        if sys.version_info >= (3, 12):
            self.writelines = core.writelines
        self.get_write_buffer_size = core.get_write_buffer_size
        self.is_closing = core.is_closing
        # What `_FlowControlMixin.__init__` sets up, with the stdlib's default write-buffer
        # limits, which the core starts with.
        self._extra = extra = {} if extra is None else extra
        self._loop = loop
        self._protocol_paused = False
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_LOW_WATER
        if type(sock) is socket.socket and (family := _sock_family(sock)) in DATAGRAM_FAMILIES:
            # `_init_socket` and `_set_nodelay`, the addresses and the option done natively.
            extra["socket"] = trsock.TransportSocket(sock)
            nodelay = (
                family != socket.AF_UNIX
                and sock.proto == socket.IPPROTO_TCP
                and _sock_type(sock) == socket.SOCK_STREAM
            )
            core.record_socket(extra, "peername" not in extra, nodelay)
            self._sock = sock
            self._sock_fd = fd
        else:
            self._init_socket(sock)
            _set_nodelay(sock)
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        if server is not None:
            _attach(server, self)
        loop._transports[self._sock_fd] = self
        # `_schedule_start`, natively.
        core.schedule_start(self, protocol, waiter, _set_result_unless_cancelled)

    # The core's methods on the class too (see the base class).

    def write(self, data):
        self._core.write(data)

    if sys.version_info >= (3, 12):

        def writelines(self, list_of_data):
            self._core.writelines(list_of_data)

    else:

        def writelines(self, list_of_data):
            # 3.11 joins first, then writes: a non-iterable is a TypeError even when falsy.
            self.write(b"".join(list_of_data))

    def write_eof(self):
        self._core.write_eof()

    # -- protocol ---------------------------------------------------------------------------

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True
        self._core.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))

    # -- reading ----------------------------------------------------------------------------

    def _read_eof(self):
        """The core read EOF."""
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            self._core.stop_reading()
        else:
            self.close()

    # -- writing ----------------------------------------------------------------------------

    def can_write_eof(self):
        return True

    def _set_write_buffer_limits(self, high=None, low=None):
        super()._set_write_buffer_limits(high, low)
        self._core.set_limits(_whole_bytes(self._high_water), _whole_bytes(self._low_water))

    @property
    def _empty_waiter(self):
        return self._core.empty_waiter

    def _make_empty_waiter(self):
        if self._core.empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        waiter = self._loop.create_future()
        if not self._core.get_write_buffer_size():
            waiter.set_result(None)
        self._core.empty_waiter = waiter
        return waiter

    def _reset_empty_waiter(self):
        self._core.empty_waiter = None

    # -- closing ----------------------------------------------------------------------------

    def _finish_close(self):
        """The core flushed the buffer of a closing transport."""
        self._call_connection_lost(None)

    def _call_connection_lost(self, exc):
        core = self._core
        waiter = core.empty_waiter
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            core.detach()
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                _detach(server, self)
                self._server = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("Connection is closed by peer"))


# 3.13 made empty datagrams sendable and counts 8 header bytes per buffered datagram.
_SENDS_EMPTY_DATAGRAMS = sys.version_info >= (3, 13)
_DATAGRAM_HEADER = 8 if sys.version_info >= (3, 13) else 0

# The address families whose addresses the native core converts as the socket module does.
DATAGRAM_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None), getattr(socket, "AF_UNIX", None)) if f
)


class DatagramTransport(_CoreSocketTransport, transports.DatagramTransport):
    """A datagram socket's transport."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._init_socket(sock)
        self._address = address
        core = self._core = DatagramCore(
            loop,
            self._sock_fd,
            self,
            sock,
            address if address else None,
            _sock_family(sock),
            bool(self._extra["peername"]),
            _SENDS_EMPTY_DATAGRAMS,
            _DATAGRAM_HEADER,
        )
        # The hot methods are the core's own, bound on the instance.
        self.sendto = core.sendto
        self.get_write_buffer_size = core.get_write_buffer_size
        self.is_closing = core.is_closing
        self.is_reading = core.is_reading
        self._protocol_connected = False
        self.set_protocol(protocol)
        loop._transports[self._sock_fd] = self

        self._schedule_start(loop, protocol, waiter)

    def sendto(self, data, addr=None):  # the core's, as on the instance (see the base class)
        self._core.sendto(data, addr)

    # -- protocol ---------------------------------------------------------------------------

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True
        self._core.set_protocol(protocol)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._core.detach()
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None


class _PipeTransport:
    """What the read and write pipe transports share: their repr and the end of their life."""

    # Until the constructor has made them (it can fail after taking the pipe: a closed fd, a
    # `fileno()` that raises), the repr and `__del__` see these.
    _pipe = None
    _core = None
    _fileno = None
    _loop = None

    def __repr__(self):
        core = self._core
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif core is not None and core.is_closing():
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None and self._loop is not None and not self._loop.is_closed():
            info.append("polling" if core is not None and core.polling else "idle")
            if isinstance(self, transports.WriteTransport):
                info.append(f"bufsize={0 if core is None else core.get_write_buffer_size()}")
        elif self._pipe is not None:
            info.append("open")
        else:
            info.append("closed")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if self._core is not None:
                self._core.detach()
            self._pipe.close()

    def get_protocol(self):
        return self._protocol

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._core.detach()
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class ReadPipeTransport(_CoreReading, _PipeTransport, transports.ReadTransport):
    """The read end of a pipe (or a socket or character device), as the stdlib's."""

    max_size = _ReadSize()

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = pipe.fileno()
        self._protocol = protocol
        mode = os.fstat(self._fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            self._pipe = None
            self._fileno = None
            self._protocol = None
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(self._fileno, False)
        core = self._core = ReadPipeCore(loop, self._fileno, self, protocol)
        self.is_reading = core.is_reading
        self.is_closing = core.is_closing

        self._schedule_start(loop, protocol, waiter)

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._core.set_protocol(protocol)

    def _read_eof(self):
        """The core read EOF: the writer closed its end."""
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._core.stop()
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def close(self):
        if not self._core.is_closing():
            self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        _report_fatal_error(self, exc, message, quiet=isinstance(exc, OSError) and exc.errno == errno.EIO)
        self._close(exc)

    def _close(self, exc):
        self._core.stop()
        self._loop.call_soon(self._call_connection_lost, exc)


class WritePipeTransport(_PipeTransport, transports._FlowControlMixin, transports.WriteTransport):
    """The write end of a pipe (or a socket or character device), as the stdlib's."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._extra["pipe"] = pipe
        self._pipe = pipe
        self._fileno = pipe.fileno()
        self._protocol = protocol
        mode = os.fstat(self._fileno).st_mode
        is_char = stat.S_ISCHR(mode)
        is_fifo = stat.S_ISFIFO(mode)
        is_socket = stat.S_ISSOCK(mode)
        if not (is_char or is_fifo or is_socket):
            self._pipe = None
            self._fileno = None
            self._protocol = None
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        os.set_blocking(self._fileno, False)
        core = self._core = WritePipeCore(loop, self._fileno, self)
        # The hot methods are the core's own, bound on the instance.
        self.write = core.write
        self.get_write_buffer_size = core.get_write_buffer_size
        self.is_closing = core.is_closing

        loop.call_soon(protocol.connection_made, self)
        # A readable write end means the reader went away (on AIX only for sockets).
        if is_socket or (is_fifo and not sys.platform.startswith("aix")):
            loop.call_soon(core.watch_peer)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    # The same methods on the class, for code that calls them through it.

    def write(self, data):
        self._core.write(data)

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def is_closing(self):
        return self._core.is_closing()

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._core.is_closing():
            return
        assert self._pipe
        if self._core.begin_eof():
            self._loop.call_soon(self._call_connection_lost, None)

    def set_protocol(self, protocol):
        self._protocol = protocol

    def close(self):
        if self._pipe is not None and not self._core.is_closing():
            # write_eof is all what is needed to close a write pipe
            self.write_eof()

    def abort(self):
        self._close(None)

    def _peer_closed(self):
        """The fd turned readable: the reader went away."""
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        if self._core.get_write_buffer_size():
            self._close(BrokenPipeError())
        else:
            self._close()

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        _report_fatal_error(self, exc, message, quiet=isinstance(exc, OSError))
        self._close(exc)

    def _close(self, exc=None):
        self._core.close_now()
        self._loop.call_soon(self._call_connection_lost, exc)
