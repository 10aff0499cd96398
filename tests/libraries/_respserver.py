"""A small in-process server that speaks the Redis protocol (RESP2 and RESP3), for the tests of
redis-py's asyncio client.

It runs on asyncio streams in the loop under test, so both ends of every connection go through
that loop. It keeps strings and lists in memory and knows the commands the tests use: HELLO,
CLIENT, SELECT, PING, SET (with PX), GET, MGET, INCR(BY), DEL, RPUSH, BLPOP, MULTI/EXEC,
SUBSCRIBE/UNSUBSCRIBE and PUBLISH. Anything else gets the error a real server gives.
"""

from __future__ import annotations

import asyncio
import contextlib


class _Conn:
    def __init__(self, writer):
        self.writer = writer
        self.proto = 2
        self.channels: set[bytes] = set()
        self.queued: list[list[bytes]] | None = None

    # Replies, encoded for the connection's protocol version.
    def encode(self, value) -> bytes:
        if value is None:
            return b"_\r\n" if self.proto == 3 else b"$-1\r\n"
        if isinstance(value, bool):
            return b":1\r\n" if value else b":0\r\n"
        if isinstance(value, int):
            return b":%d\r\n" % value
        if isinstance(value, bytes):
            return b"$%d\r\n%s\r\n" % (len(value), value)
        if isinstance(value, str):
            return b"+%s\r\n" % value.encode()
        if isinstance(value, Exception):
            return b"-%s\r\n" % str(value).encode()
        if isinstance(value, dict):
            items = [x for kv in value.items() for x in kv]
            if self.proto == 3:
                return b"%%%d\r\n" % len(value) + b"".join(map(self.encode, items))
            return self.encode(items)
        if isinstance(value, _Push):
            head = b">" if self.proto == 3 else b"*"
            return head + b"%d\r\n" % len(value.items) + b"".join(map(self.encode, value.items))
        return b"*%d\r\n" % len(value) + b"".join(map(self.encode, value))

    def send(self, value):
        self.writer.write(self.encode(value))


class _Push:
    """An out-of-band message (pub/sub): a push in RESP3, an array in RESP2."""

    def __init__(self, *items):
        self.items = items


class RespServer:
    def __init__(self):
        self.strings: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, float] = {}
        self.lists: dict[bytes, list[bytes]] = {}
        self.list_changed = asyncio.Condition()
        self.subscribers: dict[bytes, set[_Conn]] = {}
        self.commands_seen = 0
        self._handlers: set[asyncio.Task] = set()

    @contextlib.asynccontextmanager
    async def serving(self, **start_kwargs):
        """``start_server``/``start_unix_server`` keywords in, the listening server out."""
        if "path" in start_kwargs:
            server = await asyncio.start_unix_server(self._serve, **start_kwargs)
        else:
            server = await asyncio.start_server(self._serve, **start_kwargs)
        try:
            yield server
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader, writer):
        conn = _Conn(writer)
        self._handlers.add(asyncio.current_task())
        try:
            while True:
                command = await self._read_command(reader)
                if command is None:
                    break
                self.commands_seen += 1
                if conn.queued is not None and command[0].upper() not in (b"EXEC", b"MULTI"):
                    conn.queued.append(command)
                    conn.send("QUEUED")
                else:
                    conn.send(await self._run(conn, command))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Shutting down (``serving`` cancels the handlers, one may wait in BLPOP): the task
            # ends normally, as the streams' done callback on 3.11 and 3.12 expects.
            pass
        finally:
            for subscribers in self.subscribers.values():
                subscribers.discard(conn)
            self._handlers.discard(asyncio.current_task())
            writer.close()

    @staticmethod
    async def _read_command(reader):
        line = await reader.readline()
        if not line:
            return None
        if not line.startswith(b"*"):
            return line.split()
        args = []
        for _ in range(int(line[1:])):
            size = int((await reader.readline())[1:])
            args.append((await reader.readexactly(size + 2))[:-2])
        return args

    def _get(self, key):
        deadline = self.expiry.get(key)
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            self.strings.pop(key, None)
            del self.expiry[key]
        return self.strings.get(key)

    async def _run(self, conn, command):
        name, args = command[0].upper(), command[1:]
        if name == b"HELLO":
            if args:
                conn.proto = int(args[0])
            return {b"server": b"redis", b"version": b"7.4.0", b"proto": conn.proto, b"mode": b"standalone"}
        if name in (b"CLIENT", b"SELECT"):
            return "OK"
        if name == b"PING":
            return args[0] if args else "PONG"
        if name == b"SET":
            key, value, options = args[0], args[1], [a.upper() for a in args[2:]]
            self.strings[key] = value
            self.expiry.pop(key, None)
            if b"PX" in options:
                millis = int(args[2 + options.index(b"PX") + 1])
                self.expiry[key] = asyncio.get_running_loop().time() + millis / 1000
            return "OK"
        if name == b"GET":
            return self._get(args[0])
        if name == b"MGET":
            return [self._get(k) for k in args]
        if name in (b"INCR", b"INCRBY"):
            value = int(self._get(args[0]) or b"0") + (int(args[1]) if name == b"INCRBY" else 1)
            self.strings[args[0]] = b"%d" % value
            return value
        if name == b"DEL":
            return sum(
                self.strings.pop(k, None) is not None or self.lists.pop(k, None) is not None for k in args
            )
        if name == b"RPUSH":
            items = self.lists.setdefault(args[0], [])
            items.extend(args[1:])
            async with self.list_changed:
                self.list_changed.notify_all()
            return len(items)
        if name == b"BLPOP":
            keys, timeout = args[:-1], float(args[-1])

            def ready():
                return next((k for k in keys if self.lists.get(k)), None)

            async with self.list_changed:
                try:
                    async with asyncio.timeout(timeout or None):
                        await self.list_changed.wait_for(ready)
                except TimeoutError:
                    return None
            key = ready()
            return [key, self.lists[key].pop(0)]
        if name == b"MULTI":
            conn.queued = []
            return "OK"
        if name == b"EXEC":
            queued, conn.queued = conn.queued or [], None
            return [await self._run(conn, c) for c in queued]
        if name == b"SUBSCRIBE":
            for channel in args:
                self.subscribers.setdefault(channel, set()).add(conn)
                conn.channels.add(channel)
                if channel != args[-1]:
                    conn.send(_Push(b"subscribe", channel, len(conn.channels)))
            return _Push(b"subscribe", args[-1], len(conn.channels))
        if name == b"UNSUBSCRIBE":
            channels = args or sorted(conn.channels)
            for channel in channels:
                self.subscribers.get(channel, set()).discard(conn)
                conn.channels.discard(channel)
                if channel != channels[-1]:
                    conn.send(_Push(b"unsubscribe", channel, len(conn.channels)))
            return _Push(b"unsubscribe", channels[-1] if channels else None, len(conn.channels))
        if name == b"PUBLISH":
            receivers = self.subscribers.get(args[0], set())
            for receiver in receivers:
                receiver.send(_Push(b"message", args[0], args[1]))
            return len(receivers)
        return Exception(f"ERR unknown command '{name.decode()}'")
