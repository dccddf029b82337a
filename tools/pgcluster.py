"""Throwaway PostgreSQL clusters for tests, the demo and benchmarks.

A cluster is built with ``initdb`` in a temporary directory, listens on a free TCP port on
127.0.0.1 and on its own unix-socket directory, has TLS on with a self-signed certificate
made at start, and one role per authentication method:

=================  ===================  ======================================
role               password             pg_hba method
=================  ===================  ======================================
postgres           (none)               trust (superuser)
trust_user         (none)               trust
password_user      ``password_pw``      password (cleartext)
md5_user           ``md5_pw``           md5 (stored as an md5 hash)
scram_user         ``scram_pw``         scram-sha-256
ssl_only_user      ``ssl_pw``           scram-sha-256, hostssl only
nossl_user         ``nossl_pw``         scram-sha-256, hostnossl only
=================  ===================  ======================================

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` OS user.

As a module: ``Cluster.start()`` / ``cluster.stop()``. As a command::

    python tools/pgcluster.py start --dir /tmp/pg    # prints the superuser DSN
    python tools/pgcluster.py stop --dir /tmp/pg
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROLES = {
    "trust": ("trust_user", None),
    "password": ("password_user", "password_pw"),
    "md5": ("md5_user", "md5_pw"),
    "scram": ("scram_user", "scram_pw"),
    "ssl_only": ("ssl_only_user", "ssl_pw"),
    "nossl": ("nossl_user", "nossl_pw"),
}


def find_bindir() -> str:
    """The directory with initdb/pg_ctl/postgres: $PGBIN, pg_config, or Debian's layout."""
    env = os.environ.get("PGBIN")
    if env and os.path.exists(os.path.join(env, "initdb")):
        return env
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            d = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            if os.path.exists(os.path.join(d, "initdb")):
                return d
        except subprocess.CalledProcessError:
            pass
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the "
        "'postgresql' package or set PGBIN"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running throwaway cluster; see the module docstring for its roles."""

    def __init__(self, base_dir: str, port: int, bindir: str):
        self.base_dir = base_dir
        self.data_dir = os.path.join(base_dir, "data")
        self.sockdir = os.path.join(base_dir, "sock")
        self.port = port
        self.host = "127.0.0.1"
        self.bindir = bindir
        self.user = "postgres"
        self.database = "postgres"
        self.ssl_cert = os.path.join(base_dir, "server.crt")
        self.ssl_key = os.path.join(base_dir, "server.key")
        self.roles = ROLES
        self._stopped = False

    # ------------------------------------------------------------ helpers

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, args, **kw):
        if self._as_root:
            args = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + args
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def dsn(self, user: str = "postgres", password: str | None = None, **params) -> str:
        auth = user if password is None else f"{user}:{password}"
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}" + (
            f"?{query}" if query else ""
        )

    def connect_kwargs(self, **overrides) -> dict:
        kw = {"host": self.host, "port": self.port, "user": self.user, "database": self.database}
        kw.update(overrides)
        return kw

    def psql(self, sql: str, user: str = "postgres") -> str:
        out = subprocess.run(
            [
                os.path.join(self.bindir, "psql"),
                "-X",
                "-At",
                "-h",
                self.sockdir,
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                self.database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    @property
    def server_version(self) -> str:
        return self.psql("SHOW server_version")

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, base_dir: str | None = None, port: int | None = None) -> Cluster:
        bindir = find_bindir()
        base_dir = base_dir or tempfile.mkdtemp(prefix="asyncpg_rs_pg_")
        os.makedirs(base_dir, exist_ok=True)
        self = cls(base_dir, port or free_port(), bindir)
        try:
            self._init()
            self._start()
            self._create_roles()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        return self

    def _init(self):
        os.makedirs(self.sockdir, exist_ok=True)
        if self._as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError(
                    "running as root needs the 'postgres' OS user "
                    "(created by Debian's postgresql package)"
                ) from e
            os.chmod(self.base_dir, 0o755)
            for d in (self.base_dir, self.sockdir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                os.path.join(self.bindir, "initdb"),
                "-D",
                self.data_dir,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self._make_certificate()
        conf = os.path.join(self.data_dir, "postgresql.conf")
        with open(conf, "a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sockdir}'\n"
                "max_connections = 200\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\n"
                f"ssl = on\nssl_cert_file = '{self.ssl_cert}'\nssl_key_file = '{self.ssl_key}'\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        hba = os.path.join(self.data_dir, "pg_hba.conf")
        lines = [
            "local all postgres trust",
            "local all all trust",
            "host all postgres 127.0.0.1/32 trust",
            "host all trust_user 127.0.0.1/32 trust",
            "host all password_user 127.0.0.1/32 password",
            "host all md5_user 127.0.0.1/32 md5",
            "host all scram_user 127.0.0.1/32 scram-sha-256",
            "hostssl all ssl_only_user 127.0.0.1/32 scram-sha-256",
            "hostnossl all nossl_user 127.0.0.1/32 scram-sha-256",
            # a standby of this cluster streams from it (Standby below)
            "local replication postgres trust",
            "host replication postgres 127.0.0.1/32 trust",
        ]
        with open(hba, "w") as f:
            f.write("\n".join(lines) + "\n")
        if self._as_root:
            subprocess.run(["chown", "-R", "postgres:postgres", self.base_dir], check=True)

    def _make_certificate(self):
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is needed to make the test server's certificate")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                self.ssl_key,
                "-out",
                self.ssl_cert,
            ],
            check=True,
            capture_output=True,
        )
        os.chmod(self.ssl_key, 0o600)
        os.chmod(self.ssl_cert, 0o644)

    def _start(self):
        self._run(
            [
                os.path.join(self.bindir, "pg_ctl"),
                "-D",
                self.data_dir,
                "-l",
                os.path.join(self.base_dir, "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _create_roles(self):
        stmts = []
        for method, (user, password) in ROLES.items():
            if method == "md5":
                stmts.append("SET password_encryption = 'md5'")
            pw = f" PASSWORD '{password}'" if password else ""
            stmts.append(f"CREATE ROLE {user} LOGIN{pw}")
            if method == "md5":
                stmts.append("SET password_encryption = 'scram-sha-256'")
        self.psql("; ".join(stmts))

    def restart(self, down_for: float = 0.0, mode: str = "fast"):
        """Stop the server (``mode`` as pg_ctl's: fast terminates the sessions, immediate
        kills every process without a checkpoint), wait ``down_for``, start it again."""
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        self._run([pg_ctl, "-D", self.data_dir, "-m", mode, "-w", "-t", "30", "stop"])
        time.sleep(down_for)
        self._start()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            for mode in ("fast", "immediate"):
                try:
                    self._run([pg_ctl, "-D", self.data_dir, "-m", mode, "-w", "-t", "20", "stop"])
                    break
                except subprocess.CalledProcessError:
                    continue
        shutil.rmtree(self.base_dir, ignore_errors=True)


class Standby(Cluster):
    """A hot standby of a running ``Cluster``: ``pg_basebackup -R`` into its own directory,
    streaming from the primary, on its own port and socket directory, read-only until
    ``promote()``. It shares the primary's roles, certificate and pg_hba (the backup copies them).
    """

    @classmethod
    def of(cls, primary: Cluster, base_dir: str | None = None) -> Standby:
        base_dir = base_dir or tempfile.mkdtemp(prefix="asyncpg_rs_standby_")
        os.makedirs(base_dir, exist_ok=True)
        self = cls(base_dir, free_port(), primary.bindir)
        # the backup keeps the primary's paths to its certificate; the standby uses its own copy
        try:
            self._prepare_dirs()
            self._run(
                [
                    os.path.join(self.bindir, "pg_basebackup"),
                    "-h",
                    primary.sockdir,
                    "-p",
                    str(primary.port),
                    "-U",
                    "postgres",
                    "-D",
                    self.data_dir,
                    "-R",
                    "-X",
                    "stream",
                    "--checkpoint=fast",
                    "--no-sync",
                ]
            )
            for src, dst in ((primary.ssl_cert, self.ssl_cert), (primary.ssl_key, self.ssl_key)):
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o600 if dst == self.ssl_key else 0o644)
                if self._as_root:
                    shutil.chown(dst, "postgres", "postgres")
            with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
                # later settings win: the primary's port, socket directory and key are replaced
                f.write(
                    f"\nport = {self.port}\nunix_socket_directories = '{self.sockdir}'\n"
                    f"ssl_cert_file = '{self.ssl_cert}'\nssl_key_file = '{self.ssl_key}'\n"
                    "hot_standby = on\n"
                )
            self._start()
            self._wait_for(lambda: self.psql("SELECT pg_is_in_recovery()") == "t")
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        return self

    def _prepare_dirs(self):
        os.makedirs(self.sockdir, exist_ok=True)
        if self._as_root:
            os.chmod(self.base_dir, 0o755)
            for d in (self.base_dir, self.sockdir):
                shutil.chown(d, "postgres", "postgres")

    def _wait_for(self, cond, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cond():
                    return
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"standby on port {self.port}: condition not met in {timeout}s")
            time.sleep(0.05)

    def promote(self):
        """Make this standby a primary (``pg_ctl promote``) and wait until it accepts writes."""
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "-w", "promote"])
        self._wait_for(lambda: self.psql("SELECT pg_is_in_recovery()") == "f")


class PgBouncer:
    """Debian's ``pgbouncer`` in front of a ``Cluster``, on its own port, in ``pool_mode``
    ``transaction`` or ``session``, with its own auth file (SCRAM for ``scram_user``, trust for
    ``postgres``). It runs as the ``postgres`` OS user when we are root: it refuses root.
    """

    USER = "scram_user"
    PASSWORD = "scram_pw"

    def __init__(self, base_dir: str, port: int, cluster: Cluster, pool_mode: str):
        self.base_dir = base_dir
        self.port = port
        self.host = "127.0.0.1"
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.database = cluster.database
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("pgbouncer") or (
            "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
        )
        if found is None:
            raise RuntimeError("pgbouncer not found: install Debian's 'pgbouncer' package")
        return found

    @classmethod
    def start(
        cls,
        cluster: Cluster,
        pool_mode: str = "transaction",
        pool_size: int = 5,
        base_dir: str | None = None,
    ) -> PgBouncer:
        if pool_mode not in ("transaction", "session"):
            raise ValueError(f"pool_mode must be 'transaction' or 'session', not {pool_mode!r}")
        base_dir = base_dir or tempfile.mkdtemp(prefix="asyncpg_rs_pgbouncer_")
        self = cls(base_dir, free_port(), cluster, pool_mode)
        # the pooler's role makes its own tables (PostgreSQL 15 no longer lets every role)
        cluster.psql(f"GRANT CREATE ON SCHEMA public TO {cls.USER}")
        ini = os.path.join(base_dir, "pgbouncer.ini")
        users = os.path.join(base_dir, "userlist.txt")
        with open(users, "w") as f:
            f.write(f'"{cls.USER}" "{cls.PASSWORD}"\n"postgres" ""\n')
        with open(ini, "w") as f:
            f.write(
                "[databases]\n"
                f"* = host=127.0.0.1 port={cluster.port}\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                f"auth_type = scram-sha-256\nauth_file = {users}\n"
                "auth_hba_file =\n"
                f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\n"
                "min_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 500\n"
                "server_lifetime = 3600\nserver_idle_timeout = 600\n"
                # drivers send these in the startup packet; pgbouncer refuses unknown ones
                "ignore_startup_parameters = extra_float_digits,options,search_path\n"
                f"logfile = {os.path.join(base_dir, 'pgbouncer.log')}\n"
                f"pidfile = {os.path.join(base_dir, 'pgbouncer.pid')}\n"
                "admin_users = postgres\n"
            )
        args = [cls.binary(), ini]
        if os.geteuid() == 0:
            os.chmod(base_dir, 0o755)
            for p in (base_dir, ini, users):
                shutil.chown(p, "postgres", "postgres")
            args = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + args
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"pgbouncer exited at start: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        atexit.register(self.stop)
        return self

    def dsn(self, **params) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        auth = f"{self.USER}:{self.PASSWORD}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}" + (
            f"?{query}" if query else ""
        )

    def connect_kwargs(self, **overrides) -> dict:
        kw = {
            "host": self.host,
            "port": self.port,
            "user": self.USER,
            "password": self.PASSWORD,
            "database": self.database,
            "ssl": False,
        }
        kw.update(overrides)
        return kw

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc is not None and proc.stderr:
            proc.stderr.close()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="throwaway PostgreSQL clusters")
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int)
    args = ap.parse_args()
    if args.action == "start":
        c = Cluster.start(args.dir, args.port)
        atexit.unregister(c.stop)
        with open(os.path.join(args.dir, "port"), "w") as f:
            f.write(str(c.port))
        print(c.dsn())
    else:
        port_file = os.path.join(args.dir, "port")
        port = int(open(port_file).read()) if os.path.exists(port_file) else 0
        Cluster(args.dir, port, find_bindir()).stop()


if __name__ == "__main__":
    sys.exit(main())
