"""The loop's low-level socket API: ``sock_recv`` and friends, ``sock_sendfile`` and ``getaddrinfo``.

``SocketMixin`` is a base of ``ferroloop.Loop``; it needs only the loop's ``create_future``,
``_add_reader``/``_add_writer``/``_remove_reader``/``_remove_writer`` (int fds, returning the handle
or a bool), ``run_in_executor``, ``get_debug``, ``time``, ``slow_callback_duration`` and
``_check_closed``. The stdlib loop (``selector_events``, ``base_events`` and ``unix_events``) is the
specification.

Contract of every ``sock_*`` coroutine:

* An SSL socket is refused with ``TypeError``; in debug mode a blocking socket is refused with
  ``ValueError`` (a blocking call would stall the whole loop).
* The system call is tried first, so a socket that is already ready completes without a loop turn.
  Only when it would block is the fd registered, with a callback that retries the call.
* The registration lasts exactly as long as the operation: the callback unregisters the fd the
  moment the operation finishes, and a done-callback on the future unregisters it on cancellation.
  That done-callback runs a turn later, so it first checks that its own handle is still the
  registered one: if a newer operation has since taken the fd over, it leaves it alone.
* Errors are the ``socket`` module's own exceptions, so the exact ``OSError`` subclass and ``errno``
  reach the caller; ``sock_connect`` reports a failed asynchronous connect as ``OSError(errno, ...)``,
  which Python maps to the same subclass.
"""

from __future__ import annotations

import _socket
import functools
import socket
from asyncio import constants, exceptions
from asyncio.log import logger

try:
    import ssl
except ImportError:  # an interpreter built without OpenSSL
    ssl = None

__all__ = ["SocketMixin"]

_WOULD_BLOCK = (BlockingIOError, InterruptedError)
_HAS_IPV6 = hasattr(socket, "AF_INET6")
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6) if _HAS_IPV6 else (socket.AF_INET,)
_LITERAL_PROTOS = (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP)

# A socket's family and type as plain ints: `socket.socket`'s properties build enums.
_sock_family = _socket.socket.family.__get__
_sock_type = _socket.socket.type.__get__


def _check_socket(loop, sock):
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    if loop.get_debug() and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


def _byte_view(data):
    """A flat memoryview of ``data`` in bytes (``len()`` of a view over wider items counts items)."""
    view = memoryview(data)
    if view.itemsize == 1 and view.ndim == 1:
        return view
    try:
        return view.cast("B")
    except (TypeError, ValueError):
        # Struct formats (ctypes, structured arrays) do not cast; send a copy of their bytes.
        return memoryview(view.tobytes())


def _accept_nonblocking(sock):
    conn, address = sock.accept()
    try:
        conn.setblocking(False)
    except BaseException:
        conn.close()
        raise
    return conn, address


# -- address resolution ------------------------------------------------------------------------


def _is_numeric_port(port):
    if port is None or isinstance(port, int):
        return True
    if isinstance(port, (str, bytes)):
        return port.isascii() and port.isdigit()
    return False


def _may_be_numeric_host(host):
    """False when ``host`` is certainly a name, which only the resolver (in a thread) can look up.

    True for None and for strings made of digits and dots or containing a colon: those are worth
    one ``AI_NUMERICHOST`` call, which answers without any lookup or fails at once.
    """
    if host is None:
        return True
    if isinstance(host, str):
        return ":" in host or not host.strip("0123456789.")
    if isinstance(host, bytes):
        return b":" in host or not host.strip(b"0123456789.")
    return False


# A plain int: the enum member would mask unknown bits off a caller's bad flags (``-1 | flag``
# is a valid ``AddressInfo``), turning the resolver's EAI_BADFLAGS into an answer.
_AI_NUMERICHOST = int(socket.AI_NUMERICHOST)


def _literal_addrinfo(host, port, family, type, proto, flowinfo=0, scopeid=0):
    """The addrinfo of an already resolved (host, port), or None when it needs ``getaddrinfo``.

    The same shortcut as the stdlib's ``sock_connect``: the host is used exactly as given (an IPv6
    address keeps the flowinfo and scope id of the caller's 4-tuple), never normalized.
    """
    if host is None or proto not in _LITERAL_PROTOS:
        return None
    if type == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None or (isinstance(port, (str, bytes)) and not port):
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None  # a service name such as "http"
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        # inet_pton() does not take a zone index ("fe80::1%eth0"); getaddrinfo() does.
        return None
    for af in _INET_FAMILIES if family == socket.AF_UNSPEC else (family,):
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


def _describe_query(host, port, family, type, proto, flags):
    parts = [f"{host}:{port!r}"]
    for name, value in (("family", family), ("type", type), ("proto", proto), ("flags", flags)):
        if value:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


class SocketMixin:
    """``sock_*``, ``sock_sendfile`` and ``getaddrinfo`` for ``ferroloop.Loop``."""

    __slots__ = ()

    # -- plumbing --------------------------------------------------------------------------------

    def _ensure_fd_no_transport(self, fd):
        """Refuse an fd that a live transport reads or writes (an int fd)."""
        transports = getattr(self, "_transports", None)
        if not transports:
            return
        transport = transports.get(fd)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def _sock_wait(self, sock, write, callback, *args):
        """A future for an operation that would block, retried by ``callback(fut, fd, sock, *args)``
        each time ``sock`` is readable (or writable)."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        if write:
            handle = self._add_writer(fd, callback, fut, fd, sock, *args)
        else:
            handle = self._add_reader(fd, callback, fut, fd, sock, *args)
        fut.add_done_callback(functools.partial(self._sock_wait_done, fd, write, handle))
        return fut

    def _sock_wait_done(self, fd, write, handle, fut):
        # A cancelled handle was already removed, or replaced by a newer operation's on this fd.
        if not handle.cancelled():
            self._sock_unregister(fd, write)

    def _sock_unregister(self, fd, write):
        if write:
            self._remove_writer(fd)
        else:
            self._remove_reader(fd)

    def _sock_retry(self, fut, fd, sock, write, method, *args):
        """Callback: call ``sock.<method>(*args)`` again; its result completes ``fut``.

        The method is looked up on every call, never bound once, so that a socket-like object
        whose method changes meanwhile is honoured as the stdlib loop honours it.
        """
        if fut.done():
            return
        try:
            result = getattr(sock, method)(*args)
        except _WOULD_BLOCK:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._sock_unregister(fd, write)
            fut.set_exception(exc)
            fut = None  # the exception's traceback holds this frame: no cycle through the future
        else:
            self._sock_unregister(fd, write)
            fut.set_result(result)

    # -- receiving -------------------------------------------------------------------------------

    async def sock_recv(self, sock, n):
        """Receive up to ``n`` bytes from ``sock``; ``b""`` at end of stream."""
        _check_socket(self, sock)
        if type(sock) is socket.socket and sock.gettimeout() == 0:
            # A plain non-blocking socket: the native path (the bytes now, or a future to wait
            # on). A socket with a timeout waits in its own `recv`, as on the stdlib's loop.
            fd = sock.fileno()
            result = self._sock_recv(sock, fd, n)
            if type(result) is bytes:
                return result
            try:
                return await result
            except BaseException:
                # Cancelled, or the coroutine closed: the wait's reader goes now, where the
                # stdlib's loop has a done callback on the future remove it.
                self._sock_recv_abandon(fd, result)
                raise
        try:
            return sock.recv(n)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, False, self._sock_retry, False, "recv", n)

    async def sock_recv_into(self, sock, buf):
        """Receive into the writable buffer ``buf``; return the number of bytes written."""
        _check_socket(self, sock)
        try:
            return sock.recv_into(buf)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, False, self._sock_retry, False, "recv_into", buf)

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to ``bufsize`` bytes; return ``(data, address)``."""
        _check_socket(self, sock)
        try:
            return sock.recvfrom(bufsize)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, False, self._sock_retry, False, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into ``buf`` (at most ``nbytes``, default all of it); return
        ``(nbytes_received, address)``."""
        _check_socket(self, sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, False, self._sock_retry, False, "recvfrom_into", buf, nbytes)

    # -- sending ---------------------------------------------------------------------------------

    async def sock_sendall(self, sock, data):
        """Send all of ``data``. On error nothing tells how much of it the peer received."""
        _check_socket(self, sock)
        try:
            sent = sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        if type(data) is bytes and sent == len(data):
            return None  # the common case, without a view of the data
        view = _byte_view(data)
        if sent == len(view):
            return None
        return await self._sock_wait(sock, True, self._sock_sendall_ready, [view[sent:]])

    def _sock_sendall_ready(self, fut, fd, sock, pending):
        if fut.done():
            return
        rest = pending[0]
        try:
            sent = sock.send(rest)
        except _WOULD_BLOCK:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._remove_writer(fd)
            fut.set_exception(exc)
            fut = None  # the exception's traceback holds this frame: no cycle through the future
            return
        if sent == len(rest):
            self._remove_writer(fd)
            fut.set_result(None)
        else:
            pending[0] = rest[sent:]

    async def sock_sendto(self, sock, data, address):
        """Send the datagram ``data`` to ``address``; return the number of bytes sent."""
        _check_socket(self, sock)
        try:
            return sock.sendto(data, address)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, True, self._sock_retry, True, "sendto", data, 0, address)

    # -- connecting and accepting ----------------------------------------------------------------

    async def sock_connect(self, sock, address):
        """Connect ``sock`` to ``address``; a host name is resolved first (for IPv4/IPv6)."""
        _check_socket(self, sock)
        if isinstance(sock, _socket.socket):
            # Plain ints: `socket.socket`'s properties build enums.
            family, kind = _sock_family(sock), _sock_type(sock)
        else:
            family, kind = sock.family, sock.type
        if family in _INET_FAMILIES:
            host, port = address[:2]
            info = _literal_addrinfo(host, port, family, kind, sock.proto, *address[2:])
            if info is None:
                infos = await self.getaddrinfo(
                    host, port, family=sock.family, type=sock.type, proto=sock.proto
                )
                info = infos[0]
            address = info[4]
        return await self._sock_connect_resolved(sock, address)

    async def _sock_connect_resolved(self, sock, address):
        """``sock_connect`` once ``address`` is resolved."""
        if type(sock) is not socket.socket or sock.gettimeout() != 0:
            # A socket-like, or a socket with a timeout (whose `connect` waits for it, as on
            # the stdlib's loop): its own `connect`, and the Python wait.
            try:
                sock.connect(address)
            except _WOULD_BLOCK:
                return await self._sock_wait(sock, True, self._sock_connect_ready, address)
            return None
        fd = sock.fileno()
        # The core connects to an IPv4 address itself, without the exception `connect` raises
        # when the connection is under way; None for any other address.
        connected = self._connect_now(fd, _sock_family(sock), address)
        if connected is None:
            try:
                sock.connect(address)
                connected = True
            except _WOULD_BLOCK:
                # In progress (EINPROGRESS, or EINTR, after which the connect goes on in the
                # background).
                connected = False
        if connected:
            return None
        # The socket turns writable when the connect succeeds or fails: the native wait
        # (`sockops.rs`).
        fut = self._sock_connect_wait(fd, address)
        try:
            return await fut
        except BaseException:
            # Cancelled, or the coroutine closed: the wait's writer goes now, where the
            # stdlib's loop has a done callback on the future remove it.
            self._sock_connect_abandon(fd, fut)
            raise
        finally:
            fut = None  # the exception's traceback holds this frame: no cycle through the future

    def _sock_connect_ready(self, fut, fd, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                # OSError(errno, ...) is created as the matching subclass (ConnectionRefusedError...).
                raise OSError(err, f"Connect call failed {address}")
        except _WOULD_BLOCK:
            return  # not finished after all: stay registered
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._remove_writer(fd)
            fut.set_exception(exc)
            fut = None  # the exception's traceback holds this frame: no cycle through the future
        else:
            self._remove_writer(fd)
            fut.set_result(None)

    async def sock_accept(self, sock):
        """Accept a connection on the listening ``sock``; return ``(conn, address)``, with ``conn``
        non-blocking."""
        _check_socket(self, sock)
        sock.fileno()  # before accept(), as the stdlib asks: an object without a usable fd fails here
        try:
            return _accept_nonblocking(sock)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, False, self._sock_accept_ready)

    def _sock_accept_ready(self, fut, fd, sock):
        if fut.done():
            return  # never accept for a cancelled caller: the connection would be lost
        try:
            result = _accept_nonblocking(sock)
        except _WOULD_BLOCK:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._remove_reader(fd)
            fut.set_exception(exc)
            fut = None  # the exception's traceback holds this frame: no cycle through the future
        else:
            self._remove_reader(fd)
            fut.set_result(result)

    # -- sendfile --------------------------------------------------------------------------------

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send ``file`` (from ``offset``, ``count`` bytes or to the end) over the stream ``sock``.

        Uses ``os.sendfile()`` when the file allows it; otherwise, unless ``fallback`` is false
        (then ``SendfileNotAvailableError``), reads the file in chunks and sends them. Returns the
        number of bytes sent; the file position ends up after the last byte sent.
        """
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        _check_socket(self, sock)
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    def _check_sendfile_params(self, sock, file, offset, count):
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset:
            file.seek(offset)
        # Read at call time: the module constant is the knob tests and applications turn.
        chunk = constants.SENDFILE_FALLBACK_READBUFFER_SIZE
        if count:
            chunk = min(count, chunk)
        buf = bytearray(chunk)
        total = 0
        try:
            while True:
                want = chunk
                if count:
                    want = min(count - total, chunk)
                    if want <= 0:
                        break
                view = memoryview(buf)[:want]
                # The file may be slow (network file systems): read it off the loop's thread.
                got = await self.run_in_executor(None, file.readinto, view)
                if not got:
                    break  # end of file
                await self.sock_sendall(sock, view[:got])
                total += got
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # -- DNS -------------------------------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """``socket.getaddrinfo()``'s result, resolved in the default executor.

        A query that needs no lookup (an IP literal or no host, with a numeric port) is answered
        right here with ``AI_NUMERICHOST`` added: for those inputs that flag changes nothing but
        forbids a name lookup. Any failure of that shortcut goes to the executor unchanged, so
        errors are exactly the resolver's.
        """
        self._check_closed()
        if self._executor_shutdown_called:
            # As the stdlib loop, whose every query goes through the default executor.
            raise RuntimeError("Executor shutdown has been called")
        debug = self.get_debug()
        if _is_numeric_port(port) and _may_be_numeric_host(host):
            if debug:
                query = _describe_query(host, port, family, type, proto, flags)
                t0 = self.time()
            try:
                infos = socket.getaddrinfo(host, port, family, type, proto, flags | _AI_NUMERICHOST)
            except Exception:
                pass
            else:
                if debug:
                    # Both of the stdlib's lines, as if resolved in the executor.
                    logger.debug("Get address info %s", query)
                    self._log_getaddrinfo(query, self.time() - t0, infos)
                return infos
        resolve = self._getaddrinfo_logged if debug else socket.getaddrinfo
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    def _getaddrinfo_logged(self, host, port, family, type, proto, flags):
        query = _describe_query(host, port, family, type, proto, flags)
        logger.debug("Get address info %s", query)
        t0 = self.time()
        infos = socket.getaddrinfo(host, port, family, type, proto, flags)
        self._log_getaddrinfo(query, self.time() - t0, infos)
        return infos

    def _log_getaddrinfo(self, query, duration, infos):
        msg = f"Getting address info {query} took {duration * 1e3:.3f}ms: {infos!r}"
        if duration >= self.slow_callback_duration:
            logger.info(msg)
        else:
            logger.debug(msg)
