"""A throwaway PostgreSQL server for the asyncpg tests, started from the machine's binaries.

The cluster lives in a temporary directory, listens on 127.0.0.1 (an ephemeral port) and on a
Unix socket in that directory, trusts every local connection and offers TLS with a certificate
from the tests' CA. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` account that Debian's packages create.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def _bindir():
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are, or None."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for d in candidates:
        if d and all(os.access(os.path.join(d, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    port: int
    socket_dir: str
    user: str = "ferroloop"
    database: str = "postgres"

    def dsn(self, host="127.0.0.1"):
        return {"host": host, "port": self.port, "user": self.user, "database": self.database}


class PgCluster:
    """``start()`` returns a running ``PgServer`` (or raises ``LookupError`` when PostgreSQL is
    not installed); ``stop()`` shuts it down and removes its files."""

    def __init__(self, tls_cert):
        self._tls_cert = tls_cert
        self._dir = None
        self._started = False
        self._run_as = {}

    def _run(self, *args):
        result = subprocess.run(args, capture_output=True, text=True, check=False, **self._run_as)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def start(self):
        bindir = _bindir()
        if bindir is None:
            raise LookupError("PostgreSQL's initdb, pg_ctl and postgres were not found")
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise LookupError("running as root, with no postgres account to run PostgreSQL as") from None
        self._dir = tempfile.mkdtemp(prefix="ferroloop-pg-")
        if owner is not None:
            self._run_as = {"user": owner.pw_uid, "group": owner.pw_gid}
            os.chown(self._dir, owner.pw_uid, owner.pw_gid)
        data = os.path.join(self._dir, "data")
        self._data = data
        self._pg_ctl = os.path.join(bindir, "pg_ctl")
        self._run(
            os.path.join(bindir, "initdb"),
            "-D", data, "-U", PgServer.user, "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        # The server's certificate and key, readable by the server's account alone.
        for name, blob in (
            ("server.crt", self._tls_cert.cert_chain_pems),
            ("server.key", [self._tls_cert.private_key_pem]),
        ):
            path = os.path.join(data, name)
            with open(path, "wb") as f:
                for pem in blob:
                    f.write(pem.bytes())
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        port = _free_port()
        options = (
            f"-p {port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        )
        self._run(
            self._pg_ctl, "-D", data, "-o", options, "-l", os.path.join(self._dir, "log"), "-w", "start"
        )
        self._started = True
        return PgServer(port=port, socket_dir=self._dir)

    def log(self):
        try:
            with open(os.path.join(self._dir, "log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self._dir is None:
            return
        try:
            if self._started:
                self._run(self._pg_ctl, "-D", self._data, "-m", "fast", "-w", "stop")
        finally:
            self._started = False
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
