"""Checkpoint files that a crash cannot break: written beside the target, flushed to disk, renamed over it. A save
that fails for lack of space says so; the leftovers of saves cut short by ``kill -9`` are cleared at the next start."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dcgan.errors import UserError

log = logging.getLogger("dcgan")

PARTIAL_PREFIX, PARTIAL_SUFFIX = ".saving-", ".partial"  # a save cut short leaves only such a file; no resume reads one
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(folder: Path) -> int:
    """Free space, in bytes, of the file system that holds ``folder``."""
    return shutil.disk_usage(folder).free


def megabytes(n: float) -> str:
    """A size for people: 21.3 MB, 1.2 GB, 48 KB."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


class DiskFullError(UserError):
    """A checkpoint could not be written for lack of space; nothing partial is left, earlier files are whole.

    ``last_good`` (global step, path) is the newest checkpoint written before it, when the caller knows it.
    """

    def __init__(self, target: Path, free: int, needed: int, last_good: tuple[int, str] | None = None) -> None:
        self.target, self.free, self.needed, self.last_good = target, free, needed, last_good
        good = (
            f" The last good checkpoint: {last_good[1]} (global step {last_good[0]})."
            if last_good
            else " No checkpoint of this run was written before."
        )
        super().__init__(
            f"Disk full: could not write {target.name} in {target.parent} ({megabytes(free)} free, a checkpoint "
            f"needs about {megabytes(needed)}); no partial file was left.{good}"
        )

    def after(self, last_good: tuple[int, str] | None) -> DiskFullError:
        return DiskFullError(self.target, self.free, self.needed, last_good)


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a checkpoint dict: about what its file needs."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _out_of_space(err: BaseException, folder: Path, needed: int) -> bool:
    """Whether a failed write ran out of space: ENOSPC/EDQUOT anywhere in the chain (torch's zip writer may turn
    it into a ``RuntimeError: unexpected pos``), or less room left than the file needs."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return free_bytes(folder) < needed
    except OSError:
        return False


def remove_leftovers(folder: Path, before: float) -> list[Path]:
    """Delete the ``.saving-*.partial`` files in ``folder`` last written before ``before`` (a time.time()): saves
    cut short by ``kill -9``, each as large as a checkpoint. Call it holding the run dir's lock, taken at ``before``:
    no other process saves into the folder then, so every partial file older than the lock is a leftover."""
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}")):
        try:
            if path.stat().st_mtime <= before:
                size = path.stat().st_size
                path.unlink()
                removed.append(path)
                log.info("Removed %s (%s): the leftover of a save that was cut short.", path, megabytes(size))
        except FileNotFoundError:
            continue
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local files are replaced in one rename.

    Lightning's own save writes to the system temp dir and moves the file into place; where that dir
    is on another file system (a node's ``/tmp`` and a cluster's scratch), the move is a copy into the
    target, so a ``kill -9`` or a node failure during it leaves a truncated ``last.ckpt`` that the next
    ``ckpt_path=last`` cannot load. Here the bytes go to a temporary file in the checkpoint's own folder,
    are flushed with ``fsync``, and ``os.replace`` swaps it for the target: at any moment the target is
    either the previous complete checkpoint or the new complete one. The temporary name has no
    ``last`` in it, so Lightning's search for the newest ``last*.ckpt`` never picks it up.
    Remote paths (``s3://``...) keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
        except OSError as err:
            self._raise_if_full(err, target, checkpoint)
            raise
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a checkpoint gets the usual mode
            os.replace(tmp, target)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err, Exception):
                self._raise_if_full(err, target, checkpoint)
            raise
        _fsync_dir(target.parent)

    @staticmethod
    def _raise_if_full(err: Exception, target: Path, checkpoint: dict[str, Any]) -> None:
        needed = max(_tensor_bytes(checkpoint), target.stat().st_size if target.is_file() else 0)
        if _out_of_space(err, target.parent, needed):
            raise DiskFullError(target, free_bytes(target.parent), needed) from None


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, not while other threads write files
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut right after could otherwise undo it on some file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
