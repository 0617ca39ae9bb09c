"""One writer per run dir: an advisory lock that names its holder and is taken over when its holder is gone.

Two processes training into one run dir (a requeued job while its predecessor is still exiting, a command issued
twice) overwrite each other's ``last.ckpt``. The lock is a POSIX record lock (``lockf``) on ``<run dir>/.run.lock``,
which the kernel releases when its process ends, however it ends, and which forked DataLoader workers do not
inherit (an ``flock`` would stay held by them after the run). NFS passes it to the server's lock manager. The
file names the holder (PID, host, start time) so that a refusal can say who holds it. Where locks are not
available (Windows, a file system without them) the file's contents alone decide: a holder on this host whose
PID is gone is stale. A holder on another host of such a file system cannot be checked; the refusal then says
how to take the lock over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dcgan.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("dcgan")

LOCK_FILE = ".run.lock"


class RunDirInUse(UserError):
    """Another live process trains into this run dir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        holder = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {since}"


class RunDirLock:
    """Hold ``<run_dir>/.run.lock`` from :meth:`acquire` to :meth:`release`; ``wait_s`` waits for a holder to end."""

    def __init__(self, run_dir: Path, wait_s: float = 0.0) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.wait_s = wait_s
        self._fd: int | None = None
        self.since = 0.0  # time.time() when it was taken

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.wait_s
            while not self._try_lock(fd):
                if time.monotonic() >= deadline:
                    raise self._refusal(_holder(fd))
                time.sleep(1.0)
            previous = _holder(fd)
            if previous and previous.get("pid") != os.getpid():
                gone = "its process is gone" if previous.get("host") == socket.gethostname() else "released"
                log.info("Run dir lock: took over %s (%s), the lock of %s.", self.path, gone, _describe(previous))
            self.since = time.time()
            me = {"pid": os.getpid(), "host": socket.gethostname(), "since": self.since}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _try_lock(self, fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                # ENOLCK, EOPNOTSUPP: a file system without locks; the contents decide below
        holder = _holder(fd)
        if not holder:
            return True
        here = holder.get("host") == socket.gethostname()
        return here and (holder.get("pid") == os.getpid() or not _alive(int(holder.get("pid", -1))))

    def _refusal(self, holder: dict[str, Any]) -> RunDirInUse:
        return RunDirInUse(
            f"Run dir {self.path.parent} is in use by another training process ({_describe(holder)}): two runs in "
            f"one dir overwrite each other's last.ckpt. Fix: wait for it to end or stop it, or pick another "
            f"hydra.run.dir (if that process is gone on a file system without locks, delete {self.path})."
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # an empty file: the next run finds nothing to take over
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def holder_of(run_dir: Path) -> dict[str, Any] | None:
    """Who holds ``run_dir``'s lock now (PID, host, since), or None; takes nothing and writes nothing."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            return _holder(fd) if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refusal(run_dir: Path, holder: dict[str, Any]) -> str:
    """The one line that refuses a second process on ``run_dir``."""
    return str(RunDirLock(run_dir)._refusal(holder))


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, enabled: bool = True, wait_s: float = 0.0) -> Iterator[RunDirLock]:
    """Hold the run dir's lock for the ``with`` block (nothing when not ``enabled``: DDP ranks other than zero)."""
    lock = RunDirLock(run_dir, wait_s)
    if enabled:
        lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
