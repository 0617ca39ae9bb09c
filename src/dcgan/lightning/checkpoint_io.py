"""Checkpoint files that a crash cannot break: written beside the target, flushed to disk, renamed over it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"  # a save cut short leaves only such a file; no resume ever reads one


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
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".saving-", suffix=PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a checkpoint gets the usual mode
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)


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
