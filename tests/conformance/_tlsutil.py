"""Test certificates for the TLS tests: one throw-away CA (trustme), a server certificate for
localhost/127.0.0.1 and a client certificate, and helpers making SSL contexts from them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import trustme

SERVER_NAME = "localhost"


@dataclass
class TLSCerts:
    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert

    def server_context(self, *, require_client_cert=False, alpn=None):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self, *, with_cert=False, alpn=None):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


def make_certs():
    ca = trustme.CA()
    return TLSCerts(
        ca=ca,
        server=ca.issue_cert(SERVER_NAME, "127.0.0.1"),
        client=ca.issue_cert("client@example.org"),
    )
