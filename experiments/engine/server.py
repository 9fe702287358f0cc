"""An MLflow tracking server on PostgreSQL: ``python -m experiments.engine.server`` (``make server``).

The backend store is one of:

- by default, a PostgreSQL cluster of the project's own in
  ``.mlflow-server/pgdata``, made with the PostgreSQL server binaries
  installed on this machine (Debian: ``apt-get install postgresql``) on
  first use. It listens on 127.0.0.1 only (``--pg-port``, default 5433),
  trusts local connections as user ``mbstudy``, starts with the server and
  stops with it. As root it runs as the ``postgres`` user, because
  PostgreSQL refuses to run as root.
- ``--backend-store-uri postgresql://USER:PASSWORD@HOST:5432/DB`` (or
  ``MBSTUDY_BACKEND_STORE_URI``): an existing PostgreSQL, left running.

Either way the database is created if it is missing (the user needs
CREATEDB for that; otherwise create it once by hand). Artifacts go to
``--artifacts-destination``: a directory (default ``.mlflow-server/artifacts``)
or an object store such as ``s3://bucket/prefix``, which the server proxies,
so clients need no credentials for it.

The server listens on ``--host`` (default 127.0.0.1) and ``--port`` (default
5000). Arguments after ``--`` go to ``mlflow server`` unchanged, for example
``-- --allowed-hosts mlflow.example.org``. Ctrl-C or SIGTERM stops the MLflow
server, then the local PostgreSQL if this command started it. ``--stop``
stops a local PostgreSQL that was left running.

Point sweeps at it with ``export MLFLOW_TRACKING_URI=http://127.0.0.1:5000``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.engine import store

STATE = store.ROOT / ".mlflow-server"
PG_USER = "mbstudy"


class ServerError(RuntimeError):
    """Why the server cannot start, and what to do about it."""


# ---------------------------------------------------------------- PostgreSQL


def pg_binary(name: str) -> str:
    """A PostgreSQL server program (``initdb``, ``pg_ctl``): on PATH, else Debian's newest."""
    found = shutil.which(name)
    if found:
        return found
    cands = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    if cands:
        return max(cands, key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    raise ServerError(
        f"PostgreSQL's {name} was not found (looked on PATH and in /usr/lib/postgresql/*/bin): install the "
        "PostgreSQL server (Debian/Ubuntu: `sudo apt-get install postgresql`), or use an existing PostgreSQL with "
        "--backend-store-uri postgresql://USER:PASSWORD@HOST:5432/DB")


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run ``cmd`` as the ``postgres`` user."""
    if os.geteuid() != 0:
        return cmd
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("running as root, and PostgreSQL refuses to run as root; there is no 'postgres' user to "
                          "run it as: install Debian's postgresql package (it creates one), or run as another user") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    p = subprocess.run(_as_owner(cmd), capture_output=True, text=True)
    if p.returncode != 0:
        raise ServerError(f"{what} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-1500:]}")
    return p


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster of the project's own, on 127.0.0.1."""

    data: Path
    port: int
    started: bool = False  # by this process, which then stops it

    @property
    def log(self) -> Path:
        return self.data / "postgresql.log"

    def uri(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def running_port(self) -> int | None:
        """The port of the cluster's running server, or None if it is not running."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        st = subprocess.run(_as_owner([pg_binary("pg_ctl"), "-D", str(self.data), "status"]), capture_output=True, text=True)
        if st.returncode != 0:
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def ensure_running(self) -> None:
        """Make the cluster on first use, and start it unless it is already running."""
        if not (self.data / "PG_VERSION").exists():
            self._init()
        port = self.running_port()
        if port is not None:
            print(f"PostgreSQL in {self.data} is already running on port {port}: using it (and leaving it running)")
            self.port = port
            return
        if not _port_free("127.0.0.1", self.port):
            raise ServerError(f"--pg-port {self.port}: the port is taken on 127.0.0.1; choose another (make server PG_PORT=5434)")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        try:
            _run([pg_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts, "start"],
                 "starting PostgreSQL")
        except ServerError as e:
            tail = self.log.read_text()[-1500:] if self.log.exists() else ""
            raise ServerError(f"{e}\n{tail}") from None
        self.started = True

    def _init(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
            self.data.chmod(0o700)
            reach = subprocess.run(_as_owner(["test", "-w", str(self.data)]))
            if reach.returncode != 0:
                raise ServerError(f"--pg-data {self.data}: the 'postgres' user cannot reach this directory (a parent "
                                  "directory is not searchable by others); choose one it can reach, e.g. --pg-data /var/tmp/mbstudy-pg")
        print(f"creating a PostgreSQL cluster in {self.data} (user {PG_USER}, local connections only)")
        _run([pg_binary("initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-locale"],
             "initdb")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run([pg_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], "stopping PostgreSQL")


def ensure_database(uri: str) -> bool:
    """Create the URI's database if it is missing; returns whether it was created."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    shown = store.redact(uri)
    if not url.drivername.startswith("postgres"):
        return False  # another database: MLflow creates its tables, the database must exist
    conn = dict(host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username, password=url.password,
                connect_timeout=10, **{k: v for k, v in url.query.items() if isinstance(v, str)})
    try:
        psycopg.connect(dbname=url.database, **conn).close()
        return False
    except psycopg.OperationalError as e:
        if "does not exist" not in str(e):
            raise ServerError(f"--backend-store-uri {shown}: cannot connect ({str(e).strip().splitlines()[0]}); "
                              "check the host, port, user and password") from None
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **conn) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    except psycopg.Error as e:
        raise ServerError(f"--backend-store-uri {shown}: database {url.database!r} does not exist and could not be "
                          f"created as {url.username!r} ({str(e).strip().splitlines()[0]}); create it once "
                          f"(CREATE DATABASE {url.database}) or grant that user CREATEDB") from None
    print(f"created database {url.database!r}")
    return True


# -------------------------------------------------------------------- MLflow


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited with status {proc.returncode} before it was ready; its output above says why")
        try:
            store.check_reachable(url, timeout=2)
            return
        except store.StoreUnreachable:
            time.sleep(0.5)
    raise ServerError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m experiments.engine.server", description=__doc__.split("\n\n")[0],
                                 epilog="arguments after -- go to `mlflow server` unchanged")
    ap.add_argument("--host", default="127.0.0.1", help="the interface MLflow listens on (default: 127.0.0.1)")
    ap.add_argument("--port", type=int, default=5000, help="MLflow's port (default: 5000)")
    ap.add_argument("--backend-store-uri", default=os.environ.get("MBSTUDY_BACKEND_STORE_URI") or None,
                    metavar="URI", help="an existing PostgreSQL (default: a local cluster in --pg-data)")
    ap.add_argument("--artifacts-destination", default=str(STATE / "artifacts"), metavar="DIR_OR_URI",
                    help="where artifacts go (default: .mlflow-server/artifacts; s3://... needs boto3)")
    ap.add_argument("--pg-data", type=Path, default=STATE / "pgdata", help="the local cluster's directory")
    ap.add_argument("--pg-port", type=int, default=5433, help="the local cluster's port on 127.0.0.1 (default: 5433)")
    ap.add_argument("--database", default="mbstudy", help="the local cluster's database (default: mbstudy)")
    ap.add_argument("--workers", default="2", help="MLflow's server worker processes (default: 2)")
    ap.add_argument("--ready-timeout", type=float, default=180, help="seconds to wait for MLflow (first start migrates the schema)")
    ap.add_argument("--stop", action="store_true", help="stop a local PostgreSQL left running in --pg-data, and exit")
    args = ap.parse_args(argv)

    pg = LocalPostgres(args.pg_data.resolve(), args.pg_port)
    proc = None
    try:
        if args.stop:
            if pg.running_port() is None:
                print(f"no PostgreSQL is running in {pg.data}")
            else:
                pg.stop()
                print(f"stopped the PostgreSQL in {pg.data}")
            return 0
        for flag, port in (("--port", args.port), ("--pg-port", args.pg_port)):
            if not 0 < port < 65536:
                raise ServerError(f"{flag}: expected a port number 1..65535; received {port}")
        if not _port_free(args.host, args.port):
            raise ServerError(f"--port {args.port}: the port is taken on {args.host} (is `make ui` or another server "
                              f"running?); choose another: make server PORT={args.port + 1}")
        if args.backend_store_uri:
            uri, where = args.backend_store_uri, "an existing database"
        else:
            pg.ensure_running()
            uri, where = pg.uri(args.database), f"the local PostgreSQL in {pg.data}"
        ensure_database(uri)
        dest = args.artifacts_destination
        if "://" not in dest:
            Path(dest).mkdir(parents=True, exist_ok=True)
            dest = str(Path(dest).resolve())
        url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
               "--artifacts-destination", dest, "--host", args.host, "--port", str(args.port),
               "--workers", args.workers, *extra]
        print(f"starting the MLflow tracking server on {url} (backend store: {store.redact(uri)}, {where})")
        proc = subprocess.Popen(cmd, start_new_session=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        _wait_ready(url, proc, args.ready_timeout)
        print(f"\nMLflow tracking server ready: {url}\n"
              f"  backend store  {store.redact(uri)}  ({where})\n"
              f"  artifacts      {dest}\n"
              f"  use it         export MLFLOW_TRACKING_URI={url}   then   make sweep EXECUTOR=ray\n"
              f"  Ctrl-C stops it" + (" and the local PostgreSQL" if pg.started else ""), flush=True)
        return proc.wait()
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
        return 0
    finally:
        if proc is not None:
            _stop(proc)
        if pg.started:
            pg.stop()


if __name__ == "__main__":
    sys.exit(main())
