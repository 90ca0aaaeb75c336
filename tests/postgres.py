"""A throwaway PostgreSQL server for the tests, started from its binaries (as pytest-postgresql's process
fixture does): ``initdb`` into a temporary folder, ``pg_ctl start`` on a free port of 127.0.0.1 with trust
authentication, ``pg_ctl stop`` and the folder removed at the end.

The server refuses to run as root, which CI is: as root, the folder is handed to an unprivileged user
(``nobody``) and every server command runs as that user (``runuser``). The binaries are looked up on
``PATH``, then in Debian's ``/usr/lib/postgresql/<version>/bin`` (the newest), then ``pg_config --bindir``.
``.ci/run`` installs Debian's ``postgresql`` package when they are missing; ``UNOLEARN_TEST_POSTGRES=0``
skips the PostgreSQL tests on purpose, and without it a missing server fails them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from unolearn.bench import free_port

SWITCH = "UNOLEARN_TEST_POSTGRES"
SUPERUSER = "unolearn"
UNPRIVILEGED = "nobody"


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; None when not installed."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    return next((d for d in candidates if all((d / b).is_file() for b in ("initdb", "pg_ctl", "postgres"))), None)


class PostgresServer:
    """One PostgreSQL server in a temporary folder, for one test session."""

    def __init__(self, bindir: Path, port: int | None = None) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="unolearn-pg-", dir="/tmp"))  # not under pytest's 0700 tmp
        self.data = self.dir / "data"
        self.port = port or free_port()
        self.user = UNPRIVILEGED if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='{self.dir}' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast: open connections are closed), if it runs, and remove its folder; safe after
        a failed start or a server that died. A server ``pg_ctl`` cannot stop is killed."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill(self) -> None:
        """Send the postmaster named in ``postmaster.pid`` SIGQUIT (immediate shutdown: its children too)."""
        try:
            os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
        except (OSError, ValueError, IndexError):  # gone already, or the file half written
            pass

    def log(self) -> str:
        """The server's log so far."""
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, binary: str, *args: str) -> None:
        cmd = [str(self.bindir / binary), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{binary} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                               f"\n{self.log()[-2000:]}")


def start_server(bindir: Path, ports: Iterable[int | None] = (None, None, None)) -> PostgresServer:
    """A started server, on the first of ``ports`` it can start on (None: a free one): a start that fails (the
    port taken between :func:`free_port` and the server's bind, say) leaves nothing behind and is tried again
    on the next; the last failure is raised."""
    error: RuntimeError | None = None
    for port in ports:
        server = PostgresServer(bindir, port)
        try:
            server.start()
        except BaseException as e:  # whatever ends the start, the folder (and a half-started server) goes
            server.stop()
            if not isinstance(e, RuntimeError):
                raise
            error = e
            continue
        return server
    raise error or RuntimeError("no port to start PostgreSQL on")
