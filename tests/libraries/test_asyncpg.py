"""asyncpg against a real PostgreSQL server, from the loop under test.

asyncpg is a Cython protocol on a plain transport, upgrades to TLS mid-connection
with ``loop.start_tls`` (after PostgreSQL's SSLRequest) and cancels a running query
by opening a second connection, so it reaches parts of a loop that stream-based
libraries do not. Covered: typed queries, transactions, errors, a result of many
MiB, COPY in both directions, a pool under concurrent load, timeouts and task
cancellation in the middle of a query, LISTEN/NOTIFY, TLS with verification (and
its failure), a Unix socket, and a refused connection.

The server is started from the machine's PostgreSQL binaries; without them
these tests are skipped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from decimal import Decimal

import asyncpg
import pytest
from _pgserver import PgCluster
from _webutil import unused_port


@pytest.fixture(scope="session")
def pg(tls_server_cert):
    cluster = PgCluster(tls_server_cert)
    try:
        server = cluster.start()
    except LookupError as exc:
        cluster.stop()
        pytest.skip(str(exc))
    except BaseException:
        cluster.stop()
        raise
    yield server
    cluster.stop()


class _Rollback(Exception):
    pass


def test_typed_queries_transactions_and_errors(run, pg):
    async def main():
        conn = await asyncpg.connect(**pg.dsn(), ssl=False)
        try:
            one = await conn.fetchval("SELECT 1")
            row = await conn.fetchrow(
                "SELECT $1::int AS i, $2::text AS t, $3::numeric AS n, $4::bytea AS b, $5::int[] AS a",
                42, "héllo ✓", Decimal("1.50"), b"\x00\xff", [1, 2, 3],
            )  # fmt: skip
            await conn.execute("CREATE TEMP TABLE items (id int PRIMARY KEY, name text)")
            await conn.executemany("INSERT INTO items VALUES ($1, $2)", [(i, f"n{i}") for i in range(500)])
            try:
                async with conn.transaction():
                    await conn.execute("DELETE FROM items")
                    raise _Rollback
            except _Rollback:
                pass
            kept = await conn.fetchval("SELECT count(*) FROM items")
            try:
                await conn.execute("INSERT INTO items VALUES (7, 'again')")
                duplicate = None
            except asyncpg.UniqueViolationError as exc:
                duplicate = exc.sqlstate
            # The connection is still good after the error.
            name = await conn.fetchval("SELECT name FROM items WHERE id = $1", 7)
            return one, dict(row), kept, duplicate, name
        finally:
            await conn.close()

    one, row, kept, duplicate, name = run(main)
    assert one == 1
    assert row == {"i": 42, "t": "héllo ✓", "n": Decimal("1.50"), "b": b"\x00\xff", "a": [1, 2, 3]}
    assert kept == 500
    assert duplicate == "23505"
    assert name == "n7"


def test_large_result_and_copy(run, pg):
    rows = 100_000

    async def main():
        conn = await asyncpg.connect(**pg.dsn(), ssl=False)
        try:
            # About 11 MB of rows: many reads into asyncpg's buffer.
            result = await conn.fetch(
                "SELECT g, repeat(md5(g::text), 3) AS s FROM generate_series(1, $1) g", rows
            )
            total = sum(r["g"] for r in result)
            widths = {len(r["s"]) for r in result}

            await conn.execute("CREATE TEMP TABLE copied (id int, body text)")
            records = [(i, "x" * (i % 300)) for i in range(20_000)]
            await conn.copy_records_to_table("copied", records=records)
            chunks = []

            async def sink(chunk):
                chunks.append(bytes(chunk))

            await conn.copy_from_query("SELECT id, body FROM copied ORDER BY id", output=sink, format="csv")
            lines = b"".join(chunks).decode().splitlines()
            return total, widths, len(result), lines, records
        finally:
            await conn.close()

    total, widths, count, lines, records = run(main)
    assert count == rows
    assert total == rows * (rows + 1) // 2
    assert widths == {96}
    assert len(lines) == len(records)
    assert (
        lines[0] == '0,""'
        and lines[299] == "299," + "x" * 299
        and lines[-1] == f"19999,{'x' * (19999 % 300)}"
    )


def test_pool_under_concurrent_load(run, pg):
    async def main():
        async with asyncpg.create_pool(**pg.dsn(), ssl=False, min_size=2, max_size=8) as pool:

            async def query(n):
                if n % 10 == 0:
                    return await pool.fetchval("SELECT $1::int * 2 FROM pg_sleep(0.01)", n)
                return await pool.fetchval("SELECT $1::int * 2", n)

            results = await asyncio.gather(*(query(n) for n in range(300)))
            backends = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", pg.user
            )
            return results, pool.get_size(), backends

    results, size, backends = run(main)
    assert results == [n * 2 for n in range(300)]
    assert 2 <= size <= 8
    assert backends >= 1


def test_timeout_and_cancellation_mid_query(run, pg):
    async def main():
        conn = await asyncpg.connect(**pg.dsn(), ssl=False)
        try:
            started = time.monotonic()
            try:
                await conn.fetchval("SELECT pg_sleep(30)", timeout=0.3)
                timed_out = False
            except TimeoutError:
                timed_out = True
            after_timeout = await conn.fetchval("SELECT 7")

            task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
            await asyncio.sleep(0.2)
            task.cancel()
            try:
                await task
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            after_cancel = await conn.fetchval("SELECT 8")
            return timed_out, after_timeout, cancelled, after_cancel, time.monotonic() - started
        finally:
            await conn.close()

    timed_out, after_timeout, cancelled, after_cancel, elapsed = run(main)
    assert timed_out and cancelled
    assert (after_timeout, after_cancel) == (7, 8)
    # Both queries were cancelled on the server, not waited out.
    assert elapsed < 10


def test_listen_notify(run, pg):
    async def main():
        listener = await asyncpg.connect(**pg.dsn(), ssl=False)
        sender = await asyncpg.connect(**pg.dsn(), ssl=False)
        try:
            got = asyncio.Queue()

            def on_notify(_conn, _pid, channel, payload):
                got.put_nowait((channel, payload))

            await listener.add_listener("ferro", on_notify)
            for i in range(5):
                await sender.execute("SELECT pg_notify('ferro', $1)", f"message {i}")
            received = [await asyncio.wait_for(got.get(), 5) for _ in range(5)]
            await listener.remove_listener("ferro", on_notify)
            await sender.execute("SELECT pg_notify('ferro', 'unheard')")
            # A round trip on the listener's own connection: a notification sent before it would
            # have arrived by its end.
            await listener.fetchval("SELECT 1")
            return received, got.qsize()
        finally:
            await sender.close()
            await listener.close()

    received, left = run(main)
    assert received == [("ferro", f"message {i}") for i in range(5)]
    assert left == 0


def test_tls_with_verification(run, pg, client_ssl_ctx):
    async def main():
        conn = await asyncpg.connect(**pg.dsn(), ssl=client_ssl_ctx)
        try:
            on_tls = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            rows = await conn.fetch("SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
            echoed = await conn.fetchval("SELECT $1::bytea", b"\x01" * 300_000)
            return on_tls, len(rows), rows[-1]["g"], echoed
        finally:
            await conn.close()

    on_tls, count, last, echoed = run(main)
    assert on_tls is True
    assert (count, last) == (20000, 20000)
    assert echoed == b"\x01" * 300_000


def test_tls_untrusted_certificate_is_refused(run, pg, untrusting_ssl_ctx):
    async def main():
        try:
            conn = await asyncpg.connect(**pg.dsn(), ssl=untrusting_ssl_ctx)
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message
        await conn.close()
        return None

    assert run(main) == "unable to get local issuer certificate"


def test_unix_socket(run, pg):
    async def main():
        conn = await asyncpg.connect(host=pg.socket_dir, port=pg.port, user=pg.user, database=pg.database)
        try:
            # No client address: the connection came over a Unix socket.
            return await conn.fetchval("SELECT inet_client_addr()"), await conn.fetchval("SELECT 'ok'")
        finally:
            await conn.close()

    assert run(main) == (None, "ok")


def test_refused_connection(run):
    async def main():
        try:
            await asyncpg.connect(host="127.0.0.1", port=unused_port(), user="nobody", ssl=False, timeout=10)
        except OSError as exc:
            return type(exc)
        return None

    assert run(main) is ConnectionRefusedError
