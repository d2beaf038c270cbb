"""Start and stop a real ``redis-server`` (version 7 or newer) for the service, tests and benchmarks.

``make test`` installs the server on a fresh machine with ``scripts/install_redis.sh`` (Debian's
``redis-server`` package); :func:`find_redis_server` looks for it on ``PATH`` (or
``$LOGRL_REDIS_SERVER``) and checks its version. :class:`RedisServer` runs one on 127.0.0.1 with its
own folder (RDB/AOF files, log) and port (a free one by default), and stops it with ``SHUTDOWN``
(``NOSAVE`` unless asked) or, when that fails, a signal.

A server may require a password (``requirepass``, written into a ``redis.conf`` of mode 0600 in its
folder rather than onto its command line) and serve TLS only (:class:`TlsFiles`); :attr:`RedisServer.url`
then carries both (``rediss://:PASSWORD@127.0.0.1:<port>/0?ssl_ca_certs=…``), the form every
``python -m serving`` command takes in ``--redis`` / ``$LOGRL_REDIS_URL``.

Command line (used by ``scripts/stream_demo.sh``)::

    python -m serving redis start --dir outputs/stream/redis [--port 6390] [--aof]
    python -m serving redis stop --dir outputs/stream/redis
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from logdata.errors import LogDataError

logger = logging.getLogger(__name__)

MIN_VERSION = (7, 0)
ENV_BINARY = "LOGRL_REDIS_SERVER"
PORT_FILE = "port"
PID_FILE = "redis.pid"
START_TIMEOUT_S = 20.0


def find_redis_server() -> str:
    """Path of a ``redis-server`` of version :data:`MIN_VERSION` or newer.

    Raises:
        LogDataError: When none is installed or it is too old (with the install command).
    """
    binary = os.environ.get(ENV_BINARY) or shutil.which("redis-server")
    if not binary:
        raise LogDataError("redis-server not found: run `bash scripts/install_redis.sh` (Debian's "
                           f"redis-server package) or set {ENV_BINARY}")
    text = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"v=(\d+)\.(\d+)", text)
    if not found or tuple(map(int, found.groups())) < MIN_VERSION:
        raise LogDataError(f"{binary} is not redis-server >= {'.'.join(map(str, MIN_VERSION))}: "
                           f"{text.strip() or 'no version'}")
    return binary


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs).

    >>> redact_url("rediss://:s3cret@db.example:6380/0?ssl_cert_reqs=none")
    'rediss://:***@db.example:6380/0?ssl_cert_reqs=none'
    >>> redact_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS-only server (``--tls-port``).

    Attributes:
        cert: The server certificate.
        key: Its private key.
        ca: The CA that signed it (clients verify the server against it).
    """

    cert: Path
    key: Path
    ca: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1.

    Args:
        folder: Working folder (data files, ``redis.log``, ``port`` and ``redis.pid``).
        port: TCP port; 0 picks a free one.
        aof: Append-only file on, fsync'd on every write (``appendfsync always``), so an
            acknowledged write survives a crash or restart.
        max_memory: ``maxmemory`` (e.g. ``2gb``); None leaves it unset.
        password: ``requirepass``: clients must authenticate (None: no password).
        tls: Serve TLS only, on ``port``, with these files (None: plain TCP).
    """

    def __init__(self, folder: Path, port: int = 0, aof: bool = False,
                 max_memory: str | None = None, password: str | None = None,
                 tls: TlsFiles | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.aof = aof
        self.max_memory = max_memory
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``; ``rediss://`` with TLS, ``:PASSWORD@`` with a password."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        query = f"?ssl_ca_certs={quote(str(Path(self.tls.ca).resolve()))}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def command(self) -> list[str]:
        """The server's command line (a password goes into ``redis.conf``, not onto it)."""
        args = [find_redis_server()]
        if self.password:
            conf = self.folder / "redis.conf"
            conf.write_text(f'requirepass "{self.password}"\n', encoding="utf-8")
            conf.chmod(0o600)
            args.append(str(conf.resolve()))
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        args += ["--bind", "127.0.0.1", *port,
                 "--dir", str(self.folder.resolve()), "--logfile", "redis.log",
                 "--save", "", "--protected-mode", "yes", "--daemonize", "no"]
        if self.tls:
            args += ["--tls-cert-file", str(Path(self.tls.cert).resolve()),
                     "--tls-key-file", str(Path(self.tls.key).resolve()),
                     "--tls-ca-cert-file", str(Path(self.tls.ca).resolve()),
                     "--tls-auth-clients", "no"]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.max_memory:
            args += ["--maxmemory", self.max_memory]
        return args

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``.

        Raises:
            LogDataError: When it does not come up (the tail of its log is in the message).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.password and any(c in self.password for c in '"\\\n'):
            raise LogDataError("a redis password must not hold quotes, backslashes or newlines")
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.ping():
                (self.folder / PORT_FILE).write_text(f"{self.port}\n")
                (self.folder / PID_FILE).write_text(f"{self.process.pid}\n")
                logger.info("redis-server on %s (folder %s, aof %s)", redact_url(self.url),
                            self.folder, self.aof)
                return self
            time.sleep(0.05)
        log = (self.folder / "redis.log")
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
        self.kill()
        raise LogDataError(f"redis-server did not start on port {self.port}: {' | '.join(tail)}")

    def client(self, **kwargs: Any) -> Any:
        """A ``redis.Redis`` client for this server (its password and TLS settings applied)."""
        import redis

        if self.password:
            kwargs.setdefault("password", self.password)
        if self.tls:
            kwargs.setdefault("ssl", True)
            kwargs.setdefault("ssl_ca_certs", str(self.tls.ca))
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def ping(self) -> bool:
        """Whether the server answers."""
        import redis

        try:
            return bool(self.client(socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self, save: bool = False) -> None:
        """``SHUTDOWN`` (``NOSAVE`` unless ``save``), then wait; kill it if that fails."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = self.client(socket_timeout=2)
        client.set_retry(Retry(NoBackoff(), 0))  # SHUTDOWN closes the connection: do not retry
        with contextlib.suppress(redis.RedisError):
            client.shutdown(save=save, nosave=not save)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for name in (PID_FILE, PORT_FILE):
            (self.folder / name).unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no save)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_in_folder(folder: Path) -> bool:
    """Stop the server a previous ``start`` left running in ``folder`` (by its port file)."""
    port_file = Path(folder) / PORT_FILE
    if not port_file.is_file():
        return False
    server = RedisServer(folder, int(port_file.read_text().strip()))
    server.stop()
    return True
