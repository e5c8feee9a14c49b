"""SHA-256 of files for the conversion audit, and hashing started before it is needed.

Hashing a 10 GB checkpoint is ~6 s of one core. The `convert` command starts it (`hash_in_background`) before it
imports torch and transformers, ~4 s in which the second core would sit idle; a later `sha256_file` of the same,
unchanged file (same size, modification time and inode) waits for that result instead of reading the file again.
Standard library only, so that the command can call it before any heavy import.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future

_WINDOW = 64 << 20  # a multiple of the page size (mmap offsets must be)
_started: dict[tuple, Future[tuple[str, tuple]]] = {}
_lock = threading.Lock()


def _identity(path: str | os.PathLike) -> tuple:
    """What says a file is unchanged: its real path, device, inode, size and modification time."""
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _hash(path: str | os.PathLike) -> str:
    """Hex SHA-256, hashed straight from the page cache through memory-mapped windows of 64 MiB (no copy into a
    buffer: for a 10 GB file that copy cost ~2.5 s of kernel time here); each window is unmapped after use, so
    resident memory stays at one window."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        for start in range(0, size, _WINDOW):
            length = min(_WINDOW, size - start)
            with mmap.mmap(handle.fileno(), length, offset=start, access=mmap.ACCESS_READ) as window:
                if hasattr(window, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
                    window.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(window)
                try:
                    digest.update(view)
                finally:
                    view.release()
        if os.fstat(handle.fileno()).st_size != size:
            raise OSError(f"{path} changed size while it was hashed")
    return digest.hexdigest()


def hash_in_background(paths: Iterable[str | os.PathLike]) -> None:
    """Start hashing the existing regular files among `paths`, one after the other, in a daemon thread (an exiting
    command never waits for it). Errors are left for `sha256_file` to raise."""
    jobs = []
    with _lock:
        for path in paths:
            try:
                if not os.path.isfile(path):
                    continue
                key = _identity(path)
            except OSError:
                continue
            if key not in _started:
                _started[key] = Future()
                jobs.append((path, _started[key]))
    if not jobs:
        return

    def run() -> None:
        for path, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                digest = _hash(path)
                future.set_result((digest, _identity(path)))
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits for it
                future.set_exception(err)

    threading.Thread(target=run, name="early-hash", daemon=True).start()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file: the result of `hash_in_background` when it hashed this unchanged file, else read now."""
    try:
        key = _identity(path)
    except OSError:
        key = None
    with _lock:
        future = _started.pop(key, None) if key is not None else None
    if future is not None:
        try:
            digest, after = future.result()
        except OSError:
            pass  # read it again below, which raises the error where it belongs
        else:
            if after == key:
                return digest
    return _hash(path)


__all__ = ["hash_in_background", "sha256_file"]
