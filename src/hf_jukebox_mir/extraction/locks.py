"""Who owns an output folder: one run per shard at a time, with a message that names the other run.

Each process of an extraction holds `OUT/.lock-<shard>` for as long as it runs (`filelock.FileLock`: an OS lock
that the kernel drops when the process dies, so a killed run never leaves a lock that blocks the next one). Beside
it, `OUT/.lock-<shard>.json` says who holds it (PID, host, start time, command), so a second run can say which
run is in its way.

Where the filesystem has no working OS locks (some network filesystems), the lock falls back to an exclusive
lock file (`O_CREAT | O_EXCL`) whose holder is checked for staleness: a holder on this host whose PID is gone, or
one on another host that has not refreshed it (`touch`, done after every saved chunk) for `stale_after` seconds,
is taken over with a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import filelock

from ..models.errors import JukeboxRunError

logger = logging.getLogger(__name__)

#: seconds without a heartbeat after which a fallback lock held from another host counts as stale
STALE_AFTER = 6 * 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another run (it has not written who it is yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"PID {info.get('pid')} on {info.get('host')}, started {started}: {info.get('command', '?')}"


class RunLock:
    """An exclusive, non-blocking lock on `path` with an info file naming its holder.

    `acquire()` raises `JukeboxRunError` naming the other run when the lock is held; `release()` (or leaving
    the `with` block) drops it. `touch()` refreshes the heartbeat used by the fallback lock's stale check.
    """

    def __init__(self, path: Path, *, what: str, stale_after: float = STALE_AFTER, soft: bool = False):
        self.path = Path(path)
        self.info_path = self.path.with_name(self.path.name + ".json")
        self.what = what
        self.stale_after = stale_after
        self.soft = soft  # use the fallback lock file (tests; filesystems without OS locks)
        self._lock: filelock.BaseFileLock | None = None
        self._soft_held = False

    # ---- holder information
    def _info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv) or "?",
        }

    def read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _write_info(self) -> None:
        for stale in self.path.parent.glob(f"{self.info_path.name}.*.tmp"):  # left by a holder killed mid-write
            stale.unlink(missing_ok=True)
        tmp = self.info_path.with_name(f"{self.info_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._info()), encoding="utf-8")
        os.replace(tmp, self.info_path)

    def _refuse(self) -> JukeboxRunError:
        return JukeboxRunError(
            f"{self.what} is in use by another run ({_describe(self.read_info())}). Wait for it to finish, or stop "
            f"it (its finished work is kept) and run the command again; to run several jobs on one folder, give each "
            "its own --num-shards/--shard-index, or use accelerate launch."
        )

    # ---- locking
    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.soft:
            lock = filelock.FileLock(str(self.path), timeout=0)
            try:
                lock.acquire()
            except filelock.Timeout:
                raise self._refuse() from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                logger.warning("No OS file locks on %s (%s); using a lock file with a stale check.", self.path, err)
                self.soft = True
            else:
                self._lock = lock
                self._write_info()
                return self
        self._acquire_soft()
        return self

    def _acquire_soft(self) -> None:
        soft_path = self.path.with_name(self.path.name + ".held")
        for _ in range(2):
            try:
                fd = os.open(soft_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if not self._stale():
                    raise self._refuse() from None
                logger.warning("Taking over the stale lock of %s (%s).", self.what, _describe(self.read_info()))
                soft_path.unlink(missing_ok=True)
                continue
            os.close(fd)
            self._soft_held = True
            self._write_info()
            return
        raise self._refuse()

    def _stale(self) -> bool:
        info = self.read_info()
        if info is None:  # a holder killed between creating the lock and writing its info
            held = self.path.with_name(self.path.name + ".held")
            try:
                return time.time() - held.stat().st_mtime > 60
            except OSError:
                return True
        if info.get("host") == socket.gethostname():
            return not _pid_alive(int(info.get("pid", -1)))
        try:
            age = time.time() - self.info_path.stat().st_mtime
        except OSError:
            return True
        return age > self.stale_after

    def touch(self) -> None:
        """Refresh the heartbeat (the info file's modification time)."""
        try:
            os.utime(self.info_path)
        except OSError:
            pass

    def release(self) -> None:
        if self._lock is None and not self._soft_held:
            return
        self.info_path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._soft_held:
            self.path.with_name(self.path.name + ".held").unlink(missing_ok=True)
            self._soft_held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_lock_file(name: str) -> bool:
    """Whether a name in an output folder belongs to a lock (never deleted by --overwrite)."""
    return name.startswith(".lock-") or name.startswith(".merge.lock")


__all__ = ["RunLock", "STALE_AFTER", "is_lock_file"]
