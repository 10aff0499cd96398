"""TLS for ``ferroloop.Loop``: the stdlib's ``SSLProtocol`` with a shorter path for records.

The state machine, handshake, shutdown, flow control and every error path are the stdlib's own
(``asyncio.sslproto.SSLProtocol``). This subclass only takes the steady state, an established
connection whose application protocol is a plain ``Protocol``, through fewer Python frames:

- a read decrypts every complete record in the incoming buffer and stops when neither the
  buffer nor OpenSSL holds any more bytes, instead of calling ``read`` until it raises
  ``SSLWantReadError`` (it still handles that error, for a partial record);
- an application write with nothing queued before it is encrypted and sent at once, from the
  application transport's ``write``, instead of going through the write backlog.

Anything else (a handshake, a shutdown, paused reading, a ``BufferedProtocol`` application, a
backlog) goes to the stdlib's methods, so the observable order of callbacks, writes and errors
is the stdlib's.
"""

from __future__ import annotations

import ssl
from asyncio import sslproto

_WRAPPED = sslproto.SSLProtocolState.WRAPPED
_AGAIN = sslproto.SSLAgainErrors
_SSLObject = ssl.SSLObject


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    """The stdlib's application-side TLS transport; ``write`` goes to the protocol directly."""

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if not data:
            return
        proto = self._ssl_protocol
        if proto._state is not _WRAPPED or proto._write_backlog:
            proto._write_appdata((data,))
            return
        # The stdlib's _write_appdata and _do_write for one buffer with nothing queued before it.
        try:
            sslobj = proto._sslobj
            if type(sslobj) is _SSLObject:
                sslobj = sslobj._sslobj
            try:
                count = sslobj.write(data)
            except _AGAIN:
                count = 0
            except Exception:
                # Where the stdlib's write would have left it when the error reached it.
                proto._write_backlog.append(data)
                proto._write_buffer_size += len(data)
                raise
            size = len(data)
            if count < size:
                proto._write_backlog.append(data[count:])
                proto._write_buffer_size += size - count
            proto._process_outgoing()
        except Exception as ex:
            proto._fatal_error(ex, "Fatal error on SSL protocol")


class SSLProtocol(sslproto.SSLProtocol):
    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport

    def buffer_updated(self, nbytes):
        if self._state is not _WRAPPED or self._app_reading_paused or self._app_protocol_is_buffer:
            super().buffer_updated(nbytes)
            return
        incoming = self._incoming
        incoming.write(self._ssl_buffer_view[:nbytes])
        try:
            sslobj = self._sslobj
            if type(sslobj) is _SSLObject:
                # The ssl module's own SSLObject only forwards to the C object; a context's
                # sslobject_class may be a subclass that does more, and is called as it is.
                sslobj = sslobj._sslobj
            read = sslobj.read
            max_size = self.max_size
            chunk = b"1"
            first = None
            rest = None
            try:
                while True:
                    chunk = read(max_size)
                    if not chunk:
                        break
                    if first is None:
                        first = chunk
                    elif rest is None:
                        rest = [first, chunk]
                    else:
                        rest.append(chunk)
                    if not incoming.pending and not sslobj.pending():
                        break
            except _AGAIN:
                pass
            if rest is not None:
                self._app_protocol.data_received(b"".join(rest))
            elif first is not None:
                self._app_protocol.data_received(first)
            if not chunk:
                # close_notify
                self._call_eof_received()
                self._start_shutdown()
            if self._write_backlog:
                self._do_write()
            else:
                self._process_outgoing()
            size = incoming.pending
            if self._ssl_reading_paused:
                if size <= self._incoming_low_water:
                    self._control_ssl_reading()
            elif size >= self._incoming_high_water:
                self._control_ssl_reading()
        except Exception as ex:
            self._fatal_error(ex, "Fatal error on SSL protocol")

    def _process_outgoing(self):
        # The stdlib's, with its flow-control call made only when a limit is crossed (the call
        # itself decides, as it always does).
        outgoing = self._outgoing
        if not self._ssl_writing_paused:
            data = outgoing.read()
            if data:
                self._transport.write(data)
        size = outgoing.pending + self._write_buffer_size
        if self._app_writing_paused:
            if size <= self._outgoing_low_water:
                self._control_app_writing()
        elif size >= self._outgoing_high_water:
            self._control_app_writing()
