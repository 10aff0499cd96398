"""TLS for ``ferroloop.Loop``: the stdlib's ``SSLProtocol`` with a native steady state.

The state machine, handshake, shutdown, flow control and every error path are the stdlib's own
(``asyncio.sslproto.SSLProtocol``). ``_core.TlsCore``, first among the bases, holds the
attributes the steady state reads as native fields and takes an established connection's
records through native code: reads come straight from the socket transport into the incoming
BIO and on to ``data_received`` (or, for the stdlib's ``StreamReaderProtocol``, straight onto
its reader's buffer), and an application write with nothing queued before it is
encrypted and sent at once. Anything else (a handshake, a shutdown, paused reading, a
``BufferedProtocol`` application, a backlog) goes to the stdlib's methods, so the observable order
of callbacks, writes and errors is the stdlib's.
"""

from __future__ import annotations

from asyncio import sslproto

from ._core import TlsCore


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    """The stdlib's application-side TLS transport; ``write`` goes to the protocol directly."""

    def __init__(self, loop, ssl_protocol):
        super().__init__(loop, ssl_protocol)
        self.write = ssl_protocol._app_write

    def close(self):
        super().close()
        if self._ssl_protocol is None:
            # A second close lets go of the protocol; writes then fail as the stdlib's do.
            self.__dict__.pop("write", None)


class SSLProtocol(TlsCore, sslproto.SSLProtocol):
    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport
