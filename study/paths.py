"""Where a command may write, and which tracking URI it may use: the one check of each; standard library only.

Every command line checks its output paths here before anything runs. An output is a regular file or a folder:
an existing regular file may be overwritten, a symlink to a regular file or folder is followed (the target is
written, never the link replaced), and device nodes, FIFOs, sockets, dangling links and symlink loops are refused.
Credentials in a tracking URI (``http://user:pw@host``) are accepted and never printed: every message shows
:func:`redact`'s form.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from study.errors import UsageError

PROBE_TIMEOUT_S = 5.0  # an MLflow server that does not answer /health in this long is an error
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# Ray Tune's storage goes through pyarrow.fs: a folder, or a URI of a file system pyarrow can write.
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def kind(mode: int) -> str:
    """What a file of ``mode`` is, in words."""
    return next((words for test, words in KINDS if test(mode)), "an unknown kind of file")


def _resolve(path: Path, flag: str) -> Path:
    """``path`` made absolute with every symlink followed; a symlink loop or a dangling link is a UsageError."""
    shown = f"{flag} {path}" if flag else str(path)
    try:
        real = path.expanduser().resolve()
        os.stat(real) if os.path.lexists(real) else None
    except RuntimeError:  # Python 3.11's Path.resolve on a loop
        raise UsageError(f"{shown}: a symlink loop") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UsageError(f"{shown}: a symlink loop") from None
        raise UsageError(f"{shown}: {err.strerror}") from None
    if os.path.islink(real):  # resolve() stops at a link it cannot follow: it points nowhere
        raise UsageError(f"{shown}: a symlink to nothing ({os.readlink(real)})")
    return real


def _creatable(real: Path, flag: str, shown: Path) -> None:
    """The nearest existing folder above ``real`` is a folder we may write in (so ``real`` can be made)."""
    probe = real
    while not os.path.lexists(probe):
        probe = probe.parent
    mode = os.stat(probe).st_mode
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{flag} {shown}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {shown}: {probe} is not writable")


def output_folder(path: Path | str, flag: str) -> Path:
    """A folder the command may write in (it may not exist yet), resolved; creates nothing."""
    path = Path(path)
    real = _resolve(path, flag)
    if real.exists() and not real.is_dir():
        raise UsageError(f"{flag} {path}: {real} is not a folder ({kind(os.stat(real).st_mode)})")
    _creatable(real, flag, path)
    return real


def output_file(path: Path | str, flag: str) -> Path:
    """A file the command may create or overwrite, resolved (a symlink's target); creates nothing."""
    path = Path(path)
    real = _resolve(path, flag)
    if real.exists():
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{flag} {path}: {real} is {kind(mode)}, not a regular file: refused")
        if not os.access(real, os.W_OK):
            raise UsageError(f"{flag} {path}: {real} is not writable")
    _creatable(real.parent, flag, path)
    return real


def write_atomic(path: Path | str, data: bytes, flag: str = "output") -> Path:
    """``data`` into ``path`` (checked by :func:`output_file`): a temporary file beside it, then ``os.replace``,
    so a reader sees the old file or the new one, never half of one."""
    real = output_file(path, flag)
    real.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace_into(Path(tmp), real, flag)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return real


def replace_into(tmp: Path, target: Path, flag: str = "output") -> None:
    """``os.replace(tmp, target)``, but never over something that is not a regular file (checked again at the
    last moment: a device node at ``target`` would be replaced by a file)."""
    if os.path.lexists(target):
        mode = os.lstat(target).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{flag} {target}: {kind(mode)}, not a regular file: refused")
    os.replace(tmp, target)


def storage(value: str, flag: str = "--storage-path") -> str:
    """Ray Tune's storage: a folder (resolved, checked like :func:`output_folder`) or a URI pyarrow can write."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return str(output_folder(value, flag))
    if scheme == "file":
        return str(output_folder(rest, flag))
    if scheme.lower() not in STORAGE_SCHEMES or not rest:
        raise UsageError(f"{flag} {redact(value)}: unsupported storage {scheme}://; use a folder or "
                         f"{', '.join(s + '://bucket/path' for s in STORAGE_SCHEMES[:2])}")
    return value


def read_text(path: Path | str, limit: int, error: type[Exception] = UsageError, what: str = "") -> str:
    """A regular UTF-8 text file of at most ``limit`` bytes; anything else (a folder, a FIFO, a device, a link to
    one, a symlink loop, a larger file, other bytes) raises ``error`` before it is opened, so nothing hangs."""
    shown = what or str(path)
    try:
        mode, size = (st := os.stat(path)).st_mode, st.st_size
    except OSError as err:
        reason = "a symlink loop" if err.errno == errno.ELOOP else err.strerror
        raise error(f"{shown}: {reason}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{shown}: {kind(mode)}, not a regular file")
    if size > limit:
        raise error(f"{shown}: {size} bytes, larger than the {limit} allowed")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as err:
        raise error(f"{shown}: {err.strerror}") from None
    if len(raw) > limit:
        raise error(f"{shown}: larger than the {limit} bytes allowed")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{shown}: not UTF-8 text (byte {err.start})") from None


# ---------------------------------------------------------------- tracking URIs


def redact(uri: str) -> str:
    """``uri`` with any password in it replaced by ``***`` (``http://user:***@host``): what every message shows."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _probe_server(uri: str, timeout: float) -> None:
    """GET <uri>/health (with the URI's credentials as basic auth): HTTP 200 or a UsageError naming the server."""
    parts = urllib.parse.urlsplit(uri)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(bare.rstrip("/") + "/health")
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UsageError(f"cannot reach the MLflow tracking server at {redact(uri)}: {reason}") from None
    if status != 200:
        raise UsageError(f"MLflow tracking server at {redact(uri)} answered HTTP {status} on /health")


def _sqlite_file(uri: str, creates: Path | None) -> Path:
    """The database file of a ``sqlite:///`` URI, resolved: an SQLite database, or a file that can be made."""
    raw = uri[len("sqlite:///"):]
    if not raw:
        raise UsageError(f"tracking URI {uri!r} names no database file: use sqlite:///path.db")
    path = Path(raw).expanduser()
    real = _resolve(path, f"tracking URI {uri}")
    folder = real.parent
    if not folder.is_dir() and (creates is None or folder != creates):
        raise UsageError(f"tracking URI {uri}: folder {folder} does not exist")
    real = output_file(real, f"tracking URI {uri}:")
    if real.exists() and real.stat().st_size > 0:
        with real.open("rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise UsageError(f"tracking URI {uri}: {real} is not an SQLite database; name a new file or an "
                                 "MLflow database")
    return real


def tracking_uri(uri: str, creates: Path | None = None, timeout: float = PROBE_TIMEOUT_S) -> str:
    """A usable tracking URI, made absolute: a server that answers ``/health``, or a ``sqlite:///`` file that is
    an SQLite database or can be made (in an existing folder, or in ``creates``, which the command makes)."""
    if uri.startswith(("http://", "https://")):
        _probe_server(uri, timeout)
        return uri
    if not uri.startswith("sqlite:///"):
        raise UsageError(f"unsupported tracking URI {redact(uri)!r}: use sqlite:///path.db or http(s)://host:port")
    return "sqlite:///" + str(_sqlite_file(uri, creates))  # absolute: Ray changes trial working dirs
