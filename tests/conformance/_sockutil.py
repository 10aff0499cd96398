"""Socket helpers for the low-level socket tests: every socket is made by the test itself, on
loopback, and closed by it."""

from __future__ import annotations

import contextlib
import os
import socket


@contextlib.contextmanager
def closing(*socks):
    """Close every socket on exit; yields them as a tuple."""
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def listener(family=socket.AF_INET, host="127.0.0.1"):
    """A non-blocking socket listening on ``host``, on a port the kernel picks."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def tcp_pair():
    """A connected pair of non-blocking TCP sockets on 127.0.0.1: ``(client, server)``."""
    with listener() as lsock:
        client = socket.create_connection(lsock.getsockname())
        lsock.setblocking(True)
        server, _ = lsock.accept()
    with client, server:
        client.setblocking(False)
        server.setblocking(False)
        yield client, server


def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_fds():
    """The fds open in this process (Linux)."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


class TrackedSocket(socket.socket):
    """A socket subclass with its own reading and writing: the transport must go through them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used = set()

    def recv(self, *args):
        self.used.add("recv")
        return super().recv(*args)

    def recv_into(self, *args):
        self.used.add("recv")
        return super().recv_into(*args)

    def send(self, *args):
        self.used.add("send")
        return super().send(*args)

    def sendmsg(self, *args):
        self.used.add("send")
        return super().sendmsg(*args)

    def recvfrom(self, *args):
        self.used.add("recv")
        return super().recvfrom(*args)

    def recvfrom_into(self, *args):
        self.used.add("recv")
        return super().recvfrom_into(*args)

    def sendto(self, *args):
        self.used.add("send")
        return super().sendto(*args)
