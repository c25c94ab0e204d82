"""Store URLs for the contract suite: one per engine, on throwaway servers where one is needed.

Memory and SQLite need nothing. Redis (standalone, and a one-node Redis Cluster) and PostgreSQL
are started once per session on free loopback ports when their binaries are installed
(``.ci/install-services`` installs them), else taken from ``HELIX_TEST_REDIS_URL``,
``HELIX_TEST_REDIS_CLUSTER_URL`` and ``HELIX_TEST_POSTGRES_URL`` (those databases are flushed by
the tests!), else the test is skipped with the reason. Every test gets an empty store: Redis is
flushed, and PostgreSQL gets a new schema.

Other tests reuse :func:`running_redis` / :func:`running_postgres` (a private server of their own,
which they may stop and start) or the session fixtures ``redis_server``,
``redis_cluster_server`` and ``postgres_server``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import pytest

ENGINES = ("memory", "sqlite", "redis", "redis-cluster", "postgres")

REDIS_URL_ENV = "HELIX_TEST_REDIS_URL"
REDIS_CLUSTER_URL_ENV = "HELIX_TEST_REDIS_CLUSTER_URL"
POSTGRES_URL_ENV = "HELIX_TEST_POSTGRES_URL"
POSTGRES_PASSWORD = "helix-test-secret"
"""The password of our own cluster's ``postgres`` user: TCP logins need it, so tests can check
that it never shows in a message."""
_STARTUP_S = 20.0
_schemas = itertools.count(1)


def store_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty store URL for ``engine``."""
    if engine == "memory":
        return "memory://"
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    if engine == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        redis_server.flush()
        return redis_server.url
    if engine == "redis-cluster":
        cluster: RedisServer = request.getfixturevalue("redis_cluster_server")
        cluster.flush()
        return cluster.url
    if engine == "postgres":
        postgres_server: PostgresServer = request.getfixturevalue("postgres_server")
        return postgres_server.fresh_url()
    raise ValueError(f"unknown store engine {engine!r}")


def free_port(*, with_bus: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    ``with_bus=True`` also needs the port 10000 above it free, for a Redis Cluster's bus.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not with_bus:
            return port
        if port + 10_000 <= 65_535:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port


def _wait_for_port(port: int, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {_STARTUP_S:g} s")


class RedisServer:
    """A redis-server of our own on a loopback port (or an external one, which cannot restart).

    With ``cluster=True`` it is a one-node Redis Cluster holding every slot, and :attr:`url`
    carries ``?cluster=true``.
    """

    def __init__(
        self,
        url: str,
        *,
        port: int | None = None,
        directory: Path | None = None,
        cluster: bool = False,
        tls: bool = False,
    ):
        self.url = url
        self.port = port
        self.directory = directory
        self.cluster = cluster
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def restartable(self) -> bool:
        return self.port is not None

    @property
    def address(self) -> str:
        """:attr:`url` without our own query parameters (``cluster``), for redis-py itself."""
        return self.url.replace("?cluster=true", "")

    @property
    def certificate(self) -> Path:
        """The self-signed certificate of a ``tls=True`` server (its own CA)."""
        assert self.directory is not None
        return self.directory / "cert.pem"

    def start(self) -> None:
        """Start the server (again, on the same port, empty: nothing is saved)."""
        if self.port is None or self.directory is None:
            pytest.skip("an external Redis server cannot be started or stopped")
        binary = shutil.which("redis-server")
        assert binary is not None
        tls_options = (
            (
                *("--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"),
                *("--tls-cert-file", str(self.certificate)),
                *("--tls-key-file", str(self.directory / "key.pem")),
                *("--tls-ca-cert-file", str(self.certificate)),
            )
            if self.tls
            else ()
        )
        cluster_options = (
            (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.directory / "nodes.conf"),
            )
            if self.cluster
            else ()
        )
        self._process = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
                *cluster_options,
                *tls_options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, "redis-server", self._process)
        if self.cluster:
            self._wait_for_cluster()

    def _wait_for_cluster(self) -> None:
        redis = pytest.importorskip("redis", reason="pip install helix-pipeline[redis]")
        client = redis.Redis.from_url(self.address)
        try:
            if not int(client.cluster("info")["cluster_slots_assigned"]):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + _STARTUP_S
            while client.cluster("info")["cluster_state"] != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node Redis Cluster did not become ready")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server; clients see their connections refused until :meth:`start`."""
        if self.port is None:
            pytest.skip("an external Redis server cannot be started or stopped")
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def flush(self) -> None:
        """Empty the database of :attr:`url` (every primary's, on a cluster)."""
        redis = pytest.importorskip("redis", reason="pip install helix-pipeline[redis]")
        if self.cluster:
            cluster = redis.cluster.RedisCluster.from_url(self.address)
            try:
                cluster.flushdb(target_nodes=cluster.PRIMARIES)
            finally:
                cluster.close()
            return
        client = redis.Redis.from_url(self.address)
        try:
            client.flushdb()
        finally:
            client.close()


@contextmanager
def running_redis(*, cluster: bool = False, tls: bool = False) -> Iterator[RedisServer]:
    """A throwaway Redis: our own redis-server, else the environment's URL, else a skip.

    The environment variable is ``HELIX_TEST_REDIS_URL``, or ``HELIX_TEST_REDIS_CLUSTER_URL``
    (any node of a cluster) with ``cluster=True``. ``tls=True`` needs our own server (and
    openssl): it speaks only TLS, and its URL is ``rediss://...?ssl_ca_certs=<its certificate>``.
    """
    if tls and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed to make a certificate for a TLS Redis")
    if tls and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed for a TLS Redis of our own")
    if shutil.which("redis-server") is None:
        variable = REDIS_CLUSTER_URL_ENV if cluster else REDIS_URL_ENV
        external = os.environ.get(variable)
        if not external:
            pytest.skip(f"redis-server is not installed and {variable} is not set")
        query = "?cluster=true" if cluster else ""
        yield RedisServer(external + query, cluster=cluster)
        return
    directory = Path(tempfile.mkdtemp(prefix="helix-redis-"))
    port = free_port(with_bus=cluster)
    if tls:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={quote(str(directory / 'cert.pem'))}"
    else:
        url = f"redis://127.0.0.1:{port}/0{'?cluster=true' if cluster else ''}"
    server = RedisServer(url, port=port, directory=directory, cluster=cluster, tls=tls)
    try:
        if tls:
            _make_certificate(directory)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _make_certificate(directory: Path) -> None:
    """A self-signed certificate for 127.0.0.1 (``cert.pem``) and its key (``key.pem``)."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _postgres_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: the user to run it as, when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd  # POSIX only, like running as root

    for candidate in ("postgres", "nobody"):
        try:
            pwd.getpwnam(candidate)
        except KeyError:
            continue
        return candidate
    raise RuntimeError("running as root, and there is no postgres or nobody user to run initdb")


class PostgresServer:
    """A PostgreSQL cluster of our own on a loopback port (or an external database)."""

    def __init__(self, url: str, *, port: int | None = None, directory: Path | None = None):
        self.url = url
        self.port = port
        self.directory = directory

    def _run(self, *command: str) -> None:
        user = _unprivileged_user()
        prefix = ["runuser", "-u", user, "--"] if user else []
        done = subprocess.run(
            [*prefix, *command],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        if done.returncode:
            log = self.directory / "server.log" if self.directory else None
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{Path(command[0]).name} {command[-1]} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}\n{tail}"
            )

    def _pg_ctl(self, *args: str) -> None:
        if self.port is None or self.directory is None:
            pytest.skip(
                f"the PostgreSQL server from {POSTGRES_URL_ENV} cannot be started or stopped"
            )
        pg_ctl = _postgres_binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.directory / "data"), *args)

    def initialise(self) -> None:
        assert self.directory is not None
        initdb = _postgres_binary("initdb")
        assert initdb is not None
        user = _unprivileged_user()
        password_file = self.directory / "password"
        password_file.write_text(POSTGRES_PASSWORD, encoding="utf-8")
        if user:
            shutil.chown(self.directory, user)
            shutil.chown(password_file, user)
        self._run(
            initdb,
            *("-D", str(self.directory / "data"), "-U", "postgres", f"--pwfile={password_file}"),
            *("--auth-local=trust", "--auth-host=scram-sha-256"),
            *("-E", "UTF8", "--no-sync", "--no-instructions"),
        )

    def start(self) -> None:
        """Start the cluster (again, on the same port, with its data)."""
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.directory} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg_ctl("-o", options, "-l", f"{self.directory}/server.log", "-w", "start")

    def stop(self) -> None:
        """Stop the cluster at once (``-m fast``): open connections are cut."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def fresh_url(self) -> str:
        """The URL of a new, empty schema, so every test starts from an empty database."""
        psycopg = pytest.importorskip("psycopg", reason="pip install helix-pipeline[postgres]")
        schema = f"helix_test_{os.getpid()}_{next(_schemas)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A throwaway cluster: our own, else ``HELIX_TEST_POSTGRES_URL``, else a skip."""
    if _postgres_binary("initdb") is None or _postgres_binary("pg_ctl") is None:
        external = os.environ.get(POSTGRES_URL_ENV)
        if not external:
            pytest.skip(f"PostgreSQL (initdb) is not installed and {POSTGRES_URL_ENV} is not set")
        yield PostgresServer(external)
        return
    directory = Path(tempfile.mkdtemp(prefix="helix-postgres-"))
    port = free_port()
    server = PostgresServer(
        f"postgresql://postgres:{POSTGRES_PASSWORD}@127.0.0.1:{port}/postgres",
        port=port,
        directory=directory,
    )
    try:
        server.initialise()
        server.start()
        yield server
    finally:
        with suppress(RuntimeError):  # a test may have stopped it already
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the whole session; tests flush it, and must not stop it."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisServer]:
    """One one-node Redis Cluster for the whole session; tests flush it, and must not stop it."""
    with running_redis(cluster=True) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session; tests get their own schema."""
    with running_postgres() as server:
        yield server
