"""A throw-away PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a fresh
``initdb`` in a temporary directory, on a free loopback port (and a unix socket in the same
directory), password (scram-sha-256) authentication only. One per pytest process, so each
xdist worker has its own.

The binaries come with the host package ``postgresql`` that ``bin/lab bootstrap`` installs
(lab/labctl/bootstrap.py). The system cluster is not used and never started.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The application's role, as QUERYGPT_DATABASE_USER names it.
APP_ROLE = "querygpt"
SUPERUSER = "pgadmin"
MISSING_HELP = (
    "PostgreSQL's server binaries (initdb, postgres) were not found under "
    "/usr/lib/postgresql/*/bin: run `bin/lab bootstrap` (it installs Debian's postgresql "
    "package), or `apt-get install postgresql`"
)


class PostgresMissing(RuntimeError):
    pass


def find_bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PostgresMissing(MISSING_HELP)
    return Path(candidates[-1]).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    base: Path
    port: int = 0
    superuser_password: str = field(default_factory=lambda: "su-" + secrets.token_hex(12))
    #: The application role's password: tests check it never reaches a log line or a repr.
    app_password: str = field(default_factory=lambda: "pg-secret-" + secrets.token_hex(12))
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def _run_as(self) -> dict[str, object]:
        """postgres refuses to run as root: as root, run it as the package's user."""
        if os.geteuid() != 0:
            return {}
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissing(MISSING_HELP + " (the 'postgres' user is missing)") from None
        return {"user": "postgres", "group": "postgres"}

    def init(self) -> None:
        as_user = self._run_as()
        if as_user:
            shutil.chown(self.base, "postgres", "postgres")
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        result = subprocess.run(
            [
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                "--locale=C", "--no-sync", "--no-instructions",
            ],
            capture_output=True, text=True, check=False, **as_user,  # type: ignore[arg-type]
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")

    def start(self, port: int | None = None) -> None:
        self.port = port or free_port()
        with self.log.open("ab") as log:
            if self._run_as():
                shutil.chown(self.log, "postgres", "postgres")
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-k", str(self.base), "-c", f"listen_addresses={self.host}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=300",
                ],
                stdout=log, stderr=subprocess.STDOUT, **self._run_as(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin().close()
                return
            except Exception:  # noqa: BLE001 - not accepting connections yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {self.log.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown; SIGINT would be fast
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def admin(self, dbname: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, password=self.superuser_password,
            dbname=dbname, autocommit=True, connect_timeout=3,
        )

    def create_app_role(self) -> None:
        with self.admin() as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{self.app_password}'")

    def create_database(self, name: str, *, template: str | None = None) -> str:
        with self.admin() as conn:
            extra = f" TEMPLATE {template}" if template else ""
            conn.execute(f'CREATE DATABASE "{name}" OWNER {APP_ROLE}{extra}')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def environ(self, dbname: str) -> dict[str, str]:
        """The QUERYGPT_DATABASE_* variables of a backend using database ``dbname``."""
        return {
            "QUERYGPT_DATABASE_HOSTS": f"{self.host}:{self.port}",
            "QUERYGPT_DATABASE_NAME": dbname,
            "QUERYGPT_DATABASE_USER": APP_ROLE,
            "QUERYGPT_DATABASE_PASSWORD": self.app_password,
            # A loopback test server: no TLS (production uses verify-full with the internal CA).
            "QUERYGPT_DATABASE_SSLMODE": "disable",
        }


def start_server() -> PostgresServer:
    bindir = find_bindir()
    base = Path(tempfile.mkdtemp(prefix="querygpt-pg-"))
    server = PostgresServer(bindir, base)
    try:
        server.init()
        server.start()
        server.create_app_role()
    except BaseException:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return server


def remove_server(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)
