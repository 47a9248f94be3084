"""Atomic file writes, stale temporary files and run-directory locks: one place for each.

Every file funcnn writes appears whole or not at all: it is written to a
temporary file ``.{name}.{random}.tmp`` in the destination directory, flushed
and fsynced, then moved onto its name with ``os.replace``. Temporary files
are created with mode 0666 reduced by the umask, like any file the user
creates (``tempfile`` would make them 0600, which ``os.replace`` carries over),
so checkpoints, configs and metrics all get one mode.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from funcnn.errors import FuncnnError

TMP_SUFFIX = ".tmp"


class RunLockedError(FuncnnError):
    """Another live process holds a run directory's lock."""


def _open_new(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def atomic_write(path, write: Callable[[IO[bytes]], object]) -> Path:
    """Calls ``write(f)`` on a new temporary file beside ``path``, then renames it onto ``path``.

    If anything fails (a full disk, an interrupt) the temporary file is removed
    and a file already at ``path`` is untouched. An ``OSError`` is re-raised
    with ``path`` as its file name, so it can be reported in one line.
    """
    path = Path(path)
    directory = path.parent
    for _ in range(100):
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            fd = _open_new(tmp)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from None
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(errno.EEXIST, "could not create a temporary file", str(directory))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
        tmp = None
        fsync_dir(directory)  # the rename itself survives a crash
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return path


def write_text(path, text: str) -> Path:
    """Writes a small UTF-8 text file atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def append_line(path, line: str) -> None:
    """Appends one line to a text file and fsyncs it (metrics.jsonl: one line per epoch)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None


def fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: directories cannot be opened
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(directory) -> list[Path]:
    """Removes the temporary files ``atomic_write`` left behind when a process was killed mid-write.

    Only call this while holding the directory's lock (``run_lock``): another
    process's write in progress would otherwise lose its file.
    """
    removed = []
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        parts = p.name[1:-len(TMP_SUFFIX)].rsplit(".", 1)
        if len(parts) == 2 and len(parts[1]) == 12 and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


LOCK_NAME = ".funcnn.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(directory) -> Iterator[Path]:
    """Holds ``directory/.funcnn.lock`` (holding "pid host") while a process trains in it.

    A lock whose process is gone (same host, no such PID) is stale and taken
    over. Raises ``RunLockedError`` if a live process holds it.
    """
    lock = Path(directory) / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = _open_new(lock)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().partition(" ")
                pid, host = int(pid_text), host.strip()
            except (OSError, ValueError):  # half-written or unreadable: treat as held, say where
                pid, host = None, None
            if pid is not None and host == socket.gethostname() and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            who = f"process {pid} on {host}" if pid is not None else "another process"
            raise RunLockedError(
                f"{directory} is in use by {who} (lock file {lock}); wait for it to finish, or remove "
                "the lock file if no funcnn process runs there.") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:  # pragma: no cover - the stale lock kept coming back
        raise RunLockedError(f"could not take the lock {lock}.")
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text() == me:
                lock.unlink()
