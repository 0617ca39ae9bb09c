"""Faults in the middle of a run: a damaged image, a full disk, Ctrl-C, two processes on one run dir, leftovers."""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.data import ImageFolderDataModule
from dcgan.data.base import DataError
from dcgan.data.files import ImageFiles
from dcgan.lightning.checkpoint_io import PARTIAL_SUFFIX, AtomicCheckpointIO, DiskFullError, remove_leftovers
from dcgan.platform.loggers import TensorBoardLogger
from dcgan.platform.rundir import LOCK_FILE, RunDirInUse, RunDirLock
from dcgan.tasks.train import train
from tests.conftest import ROOT, TINY, train_py
from tests.test_long_runs import ARGS, assert_same_weights, signal_at
from tests.test_resume import data_position, folder_run, load


def damaged_folder(root: Path, good: int = 191) -> tuple[Path, Path]:
    """``good`` distinct 20x20 RGB PNGs and one truncated PNG: its header parses, its pixels do not."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(good):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
    bad = root / f"{good // 2:04d}b.png"  # sorts in the middle: 0010.png < 0010b.png < 0011.png
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return root, bad


# --- damaged images --------------------------------------------------------------------------------------------


def test_a_damaged_file_gives_its_slot_to_the_next_readable_one(tmp_path: Path) -> None:
    root, bad = damaged_folder(tmp_path / "images", good=20)
    dm = ImageFolderDataModule(data_dir=str(root), image_size=16, num_workers=0)
    dm.setup()
    i = dm.files.index(bad)
    image, failures = dm.dataset[i]
    assert [j for j, _ in failures] == [i] and "truncated" in failures[0][1]
    assert torch.equal(image, dm.dataset[i + 1][0])  # the next file's pixels
    assert torch.equal(dm.images_at(torch.tensor([i]))[0], image)

    strict = ImageFolderDataModule(data_dir=str(root), image_size=16, num_workers=0, bad_images="fail")
    strict.setup()  # the header check passes it: only decoding finds the damage
    with pytest.raises(DataError, match=re.escape(f"{bad} cannot be decoded (OSError: image file is truncated")):
        strict.images_at(torch.tensor([i]))


def test_a_folder_of_mostly_damaged_files_still_fails_fast(tmp_path: Path) -> None:
    root, _ = damaged_folder(tmp_path / "images", good=4)
    for path in sorted(root.glob("000[0-2].png")):
        path.write_bytes(b"not a png")  # 3 of 5 fail the header check
    dm = ImageFolderDataModule(data_dir=str(root), image_size=16, num_workers=0)
    with pytest.raises(DataError, match=r"3 of 5 image files cannot be read \(more than 10%"):
        dm.setup()


def test_the_cache_fills_a_damaged_slot_like_the_workers_and_remembers_it(tmp_path: Path, caplog) -> None:
    root, bad = damaged_folder(tmp_path / "images", good=20)
    plain = ImageFolderDataModule(data_dir=str(root), image_size=16, num_workers=0)
    plain.setup()
    cached = ImageFolderDataModule(
        data_dir=str(root), image_size=16, num_workers=0, cache=True, cache_dir=str(tmp_path / "c")
    )
    cached.prepare_data()
    cached.setup()
    assert all(torch.equal(cached.images[i], plain.dataset[i][0]) for i in range(len(plain.files)))
    again = ImageFolderDataModule(
        data_dir=str(root), image_size=16, num_workers=0, cache=True, cache_dir=str(tmp_path / "c")
    )
    with caplog.at_level(logging.WARNING):
        again.setup()  # the cache is reused: the skip is still named
    assert any(str(bad) in r.getMessage() for r in caplog.records)
    strict = ImageFolderDataModule(
        data_dir=str(root), image_size=16, num_workers=0, cache=True, cache_dir=str(tmp_path / "c"), bad_images="fail"
    )
    with pytest.raises(DataError, match="built with data.bad_images=skip"):
        strict.setup()


def test_bad_images_must_be_skip_or_fail(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bad_images='ignore': expected skip .* or fail"):
        ImageFolderDataModule(data_dir=str(tmp_path), bad_images="ignore")


def test_a_worker_search_is_bounded(tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.png" for i in range(30)]

    def broken(path: Path) -> torch.Tensor:
        raise OSError("image file is truncated")

    image, failures = ImageFiles(files, broken, skip=True)[5]
    assert image is None and len(failures) == 4  # int(10% of 30) + 1 tries, then the run stops on the share


@pytest.mark.slow
def test_a_damaged_image_on_the_worker_path_is_skipped_named_once_and_resumes_exactly(
    make_cfg, tmp_path: Path, caplog
) -> None:
    root, bad = damaged_folder(tmp_path / "images")  # 192 files, 12 batches of 16 an epoch: each drawn every epoch
    run = [*folder_run(root), "trainer.max_steps=72", "trainer.max_epochs=-1"]  # 3 epochs
    with caplog.at_level(logging.WARNING):
        train(make_cfg(run, run_dir=tmp_path / "straight"))
    named = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
    assert len([m for m in named if "skipped" in m and "its slot" in m]) == 1, named
    assert any("1 unreadable image file(s) skipped in this run" in m for m in named), named

    train(make_cfg([*folder_run(root), "trainer.max_steps=30"], run_dir=tmp_path / "first"))  # 15 batches
    halfway = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert data_position(load(halfway)) == (1, 3)
    train(make_cfg([*run, f"ckpt_path={halfway}"], run_dir=tmp_path / "resumed"))
    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 72
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_a_damaged_image_under_fail_stops_in_one_line(tmp_path: Path) -> None:
    root, bad = damaged_folder(tmp_path / "images")
    run = [*folder_run(root)[len(TINY) :], "data.bad_images=fail", "trainer.max_epochs=1"]
    proc = train_py([*run, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(bad) in errors[0] and "data.bad_images=skip" in errors[0], errors


@pytest.mark.slow
def test_a_damaged_image_under_ddp_is_skipped_by_the_rank_that_meets_it(tmp_path: Path) -> None:
    from tests.test_distributed import DDP

    root, bad = damaged_folder(tmp_path / "images")  # 2 ranks of 96 images, 2 workers each
    run = [*folder_run(root)[len(TINY) :], "trainer.max_steps=48", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = train_py([*DDP, *run], tmp_path)
    skipped = [line for line in (proc.stdout + proc.stderr).splitlines() if f"skipped {bad}" in line]
    assert skipped and all("(rank " in line for line in skipped), skipped
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 48


# --- a full disk -------------------------------------------------------------------------------------------------


def test_a_save_that_runs_out_of_space_says_so_and_leaves_nothing_partial(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.zeros(1000)}, target)
    original = torch.save

    def full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from OSError(
            errno.ENOSPC, "No space left on device"
        )

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=re.escape(f"Disk full: could not write last.ckpt in {tmp_path} (")):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, target)
    monkeypatch.setattr(torch, "save", original)
    assert torch.load(target, weights_only=False)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_another_failed_save_is_not_called_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    def denied(obj: object, f: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(PermissionError):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, tmp_path / "last.ckpt")


@pytest.mark.slow
def test_a_full_disk_is_foretold_then_stops_the_run_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    full = ["+callbacks.disk._target_=tests.probes.FullDisk", "+callbacks.disk.saves=2", "+callbacks.disk.free=50000"]
    every_10 = [*ARGS, "callbacks.checkpoint.every_n_train_steps=10", f"hydra.run.dir={run}"]
    proc = train_py([*every_10, "trainer.max_steps=60", *full], tmp_path, check=False)
    output = proc.stdout + proc.stderr
    lines = output.splitlines()

    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    warned = next(i for i, line in enumerate(lines) if "Checkpoint space:" in line)
    assert "every_n_train_steps=" in lines[warned]
    (error,) = [line for line in lines if "ERROR" in line]
    assert lines.index(error) > warned
    last = run / "checkpoints" / "last.ckpt"
    assert "Disk full: could not write step0000020.ckpt" in error
    assert f"The last good checkpoint: {last} (global step 10)" in error
    assert error.endswith(f"hydra.run.dir={run} ckpt_path=last")
    assert load(last)["global_step"] == 10
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(PARTIAL_SUFFIX)]


def test_file_loggers_name_a_failed_write_once_and_go_on(tmp_path: Path, caplog) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")

    class FullWriter:
        calls = 0

        def add_scalar(self, *args: object, **kwargs: object) -> None:
            FullWriter.calls += 1
            raise OSError(errno.ENOSPC, "No space left on device")

    logger._experiment = FullWriter()
    with caplog.at_level(logging.WARNING):
        logger.log_metrics({"loss/d": 1.0}, step=1)
        logger.log_metrics({"loss/d": 0.5}, step=2)
    assert FullWriter.calls == 1  # the second write is dropped
    assert sum("not written from here on" in r.getMessage() for r in caplog.records) == 1


# --- Ctrl-C ------------------------------------------------------------------------------------------------------


def _sigint_as_a_terminal_sends_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a runner that starts tests in the background may ignore it


@pytest.mark.slow
def test_ctrl_c_stops_at_a_batch_boundary_and_the_printed_command_resumes_exactly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_py([*ARGS, "trainer.max_steps=40", f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    first = train_py(
        [*ARGS, "trainer.max_steps=40", f"hydra.run.dir={run}", *signal_at(20, "SIGINT")],
        tmp_path,
        check=False,
        preexec_fn=_sigint_as_a_terminal_sends_it,
    )
    output = first.stdout + first.stderr
    assert first.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    # the probe sends SIGINT after the callback's check of batch 10: the run stops at the end of batch 11
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 22
    stopped = next(line for line in output.splitlines() if "Ctrl-C: stopped at global step 22" in line)
    command = stopped.split("Continue with: ", 1)[1]
    assert command.endswith(f"hydra.run.dir={run} ckpt_path=last")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = shlex.split(command)
    resumed = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(
        load(tmp_path / "straight" / "checkpoints" / "last.ckpt"), load(run / "checkpoints" / "last.ckpt")
    )


# --- one run dir, one writer -------------------------------------------------------------------------------------

HOLD = "import sys, time; from dcgan.platform.rundir import RunDirLock; RunDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"  # noqa: E501


def _hold(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_run_dir_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    holder = _hold(run)
    try:
        with pytest.raises(RunDirInUse, match=rf"in use by another training process \(PID {holder.pid} on host "):
            RunDirLock(run).acquire()
    finally:
        holder.kill()  # kill -9: the file still names it, the kernel dropped its lock
        holder.wait()
    assert str(holder.pid) in (run / LOCK_FILE).read_text()
    lock = RunDirLock(run)
    with caplog.at_level(logging.INFO, logger="dcgan"):
        lock.acquire()
    assert any(f"PID {holder.pid} on host {socket.gethostname()}" in r.getMessage() for r in caplog.records)
    assert "its process is gone" in caplog.text
    lock.release()
    again = RunDirLock(run)
    again.acquire()  # released cleanly: nothing to take over
    again.release()


@pytest.mark.slow
def test_train_py_on_a_run_dir_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = _hold(run)
    try:
        proc = train_py([*ARGS, "trainer.max_steps=4", f"hydra.run.dir={run}"], tmp_path, check=False)
    finally:
        holder.kill()
        holder.wait()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
    # refused before Hydra starts (hydra.run.dir names the dir): one line on stderr, nothing written there
    (error,) = [line for line in output.splitlines() if "in use by another training process" in line]
    assert error.startswith("Error: Run dir") and f"PID {holder.pid}" in error and "hydra.run.dir" in error
    assert not (run / "checkpoints").exists() and not (run / ".hydra").exists()


# --- leftovers ---------------------------------------------------------------------------------------------------


def test_leftover_partial_files_older_than_the_lock_are_removed(tmp_path: Path, caplog) -> None:
    old = tmp_path / f".saving-abc{PARTIAL_SUFFIX}"
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 60, time.time() - 60))
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    newer = tmp_path / f".saving-def{PARTIAL_SUFFIX}"
    newer.write_bytes(b"x")
    os.utime(newer, (time.time() + 60, time.time() + 60))  # written after the lock was taken: not a leftover
    with caplog.at_level(logging.INFO, logger="dcgan"):
        assert remove_leftovers(tmp_path, before=time.time()) == [old]
    assert not old.exists() and newer.exists()
    assert "leftover of a save that was cut short" in caplog.text


def test_a_new_run_removes_the_leftovers_of_a_killed_save(make_cfg, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    leftover = run / "checkpoints" / f".saving-xyz{PARTIAL_SUFFIX}"
    leftover.write_bytes(b"x" * 100)
    train(make_cfg([*TINY, "+trainer.fast_dev_run=true"], run_dir=run))
    assert not leftover.exists()


def test_the_lock_is_released_when_the_run_ends(make_cfg, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg([*TINY, "+trainer.fast_dev_run=true"], run_dir=run))
    assert (run / LOCK_FILE).read_text() == ""
    RunDirLock(run).acquire()


def test_sigint_is_ignored_by_data_workers() -> None:
    from dcgan.data.loader import _ignore_interrupts

    previous = signal.getsignal(signal.SIGINT)
    try:
        _ignore_interrupts(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
