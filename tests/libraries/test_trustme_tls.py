"""TLS end to end with certificates from a throwaway trustme CA.

aiohttp over https, asyncio streams over TLS (direct and upgraded with
start_tls), and clients that must refuse the server's certificate.
"""

from __future__ import annotations

import asyncio
import io
import ssl

import aiohttp
import pytest
from _webutil import digest, payload, serve_app
from aiohttp import web

MiB = 1024 * 1024


def _check_rejected_handshakes(handler_calls):
    """The server side of a handshake the client aborted reports it only in debug mode (the stdlib's rule)."""
    for context in handler_calls:
        assert context["message"] == "Error on transport creation for incoming connection", context
        assert isinstance(context["exception"], (ConnectionError, ssl.SSLError)), context


# ---------------------------------------------------------------------------
# aiohttp over https
# ---------------------------------------------------------------------------


def _tls_app():
    async def info(request):
        ssl_object = request.transport.get_extra_info("ssl_object")
        return web.json_response(
            {
                "secure": request.secure,
                "scheme": request.scheme,
                "version": ssl_object.version() if ssl_object is not None else None,
                "echo": await request.json(),
            }
        )

    async def upload(request):
        data = await request.read()
        return web.Response(body=data[::-1])

    app = web.Application(client_max_size=16 * MiB)
    app.router.add_post("/info", info)
    app.router.add_post("/upload", upload)
    return app


async def _https_exchange(server_ctx, client_ctx, blob):
    connector = aiohttp.TCPConnector(ssl=client_ctx)
    async with serve_app(_tls_app(), ssl_context=server_ctx) as base:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(f"{base}/info", json={"n": 42, "s": "\u00fcber"}) as resp:
                assert resp.status == 200
                info = await resp.json()
            async with session.post(f"{base}/upload", data=io.BytesIO(blob)) as resp:
                assert resp.status == 200
                reversed_blob = await resp.read()
    return info, reversed_blob


def test_aiohttp_https_json(run, server_ssl_ctx, client_ssl_ctx):
    blob = payload(3 * MiB, seed=31)
    info, reversed_blob = run(_https_exchange, server_ssl_ctx, client_ssl_ctx, blob)
    assert info["secure"] is True
    assert info["scheme"] == "https"
    assert info["version"] in ("TLSv1.2", "TLSv1.3")
    assert info["echo"] == {"n": 42, "s": "\u00fcber"}
    assert len(reversed_blob) == len(blob)
    assert digest(reversed_blob[::-1]) == digest(blob)


async def _aiohttp_untrusted(server_ctx, client_ctx):
    connector = aiohttp.TCPConnector(ssl=client_ctx)
    async with serve_app(_tls_app(), ssl_context=server_ctx) as base:
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
                async with session.post(f"{base}/info", json={}):
                    pass
    return info.value


def test_aiohttp_untrusted_certificate(run, server_ssl_ctx, untrusting_ssl_ctx):
    err = run(_aiohttp_untrusted, server_ssl_ctx, untrusting_ssl_ctx, allow_handler_calls=True)
    _check_rejected_handshakes(run.handler_calls)
    assert isinstance(err.certificate_error, ssl.SSLCertVerificationError)


# ---------------------------------------------------------------------------
# asyncio streams over TLS
# ---------------------------------------------------------------------------


async def _echo_handler(reader, writer):
    try:
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


async def _streams_echo(server_ctx, client_ctx, blob):
    server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        connecting = asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        reader, writer = await connecting
        ssl_object = writer.get_extra_info("ssl_object")
        peercert = writer.get_extra_info("peercert")
        lines = []
        for i in range(20):
            writer.write(f"line {i}\n".encode())
            lines.append(await reader.readline())
        # A large write crosses many TLS records and fills the transport buffers both ways.
        writer.write(blob)
        big = await reader.readexactly(len(blob))
        writer.close()
        await writer.wait_closed()
    return lines, big, ssl_object.server_hostname, peercert


def test_streams_tls_echo(run, server_ssl_ctx, client_ssl_ctx):
    blob = payload(2 * MiB, seed=32)
    lines, big, hostname, peercert = run(_streams_echo, server_ssl_ctx, client_ssl_ctx, blob)
    assert lines == [f"line {i}\n".encode() for i in range(20)]
    assert big == blob
    assert hostname == "localhost"
    assert ("DNS", "localhost") in peercert["subjectAltName"]


async def _streams_start_tls(server_ctx, client_ctx):
    async def handler(reader, writer):
        try:
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
            assert writer.get_extra_info("ssl_object") is not None
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert writer.get_extra_info("ssl_object") is None
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        version = writer.get_extra_info("ssl_object").version()
        writer.write(b"secret\n")
        reply = await reader.readline()
        writer.close()
        await writer.wait_closed()
    return version, reply


def test_streams_start_tls_upgrade(run, server_ssl_ctx, client_ssl_ctx):
    version, reply = run(_streams_start_tls, server_ssl_ctx, client_ssl_ctx)
    assert version in ("TLSv1.2", "TLSv1.3")
    assert reply == b"SECRET\n"


async def _streams_rejected(server_ctx, client_ctx, server_hostname):
    server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname)
    return info.value


def test_streams_untrusted_certificate(run, server_ssl_ctx, untrusting_ssl_ctx):
    err = run(_streams_rejected, server_ssl_ctx, untrusting_ssl_ctx, "localhost", allow_handler_calls=True)
    _check_rejected_handshakes(run.handler_calls)
    assert "certificate verify failed" in str(err)


def test_streams_wrong_hostname(run, server_ssl_ctx, client_ssl_ctx):
    err = run(_streams_rejected, server_ssl_ctx, client_ssl_ctx, "example.org", allow_handler_calls=True)
    _check_rejected_handshakes(run.handler_calls)
    assert "example.org" in err.verify_message or "mismatch" in err.verify_message.lower()
