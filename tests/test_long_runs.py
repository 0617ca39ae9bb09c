"""Runs that are stopped and continued: SIGTERM, a scheduler's requeue signal, re-issued sweeps, kill -9 mid-save."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcgan.lightning.checkpoint_io import PARTIAL_SUFFIX, AtomicCheckpointIO
from dcgan.lightning.requeue import RequeueOnSignal, lightning_cluster_plugins
from dcgan.tasks.train import train
from hydra_plugins.dcgan_launcher.requeue import resume_from_last
from tests.conftest import ROOT, TINY, train_py
from tests.test_resume import RUN, load

ARGS = [o for o in RUN if o not in TINY]  # train_py adds TINY itself


def signal_at(step: int, name: str = "SIGTERM") -> list[str]:
    return [
        "+callbacks.signal._target_=tests.probes.SignalAt",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.signal={name}",
    ]


def assert_same_weights(a: dict, b: dict) -> None:
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


def test_resume_from_last_is_added_unless_a_checkpoint_is_named() -> None:
    assert resume_from_last(["seed=1"]) == ["seed=1", "ckpt_path=last"]
    assert resume_from_last(["ckpt_path=/a/init.ckpt"]) == ["ckpt_path=/a/init.ckpt"]
    # a requeued job continues from its own checkpoint, not the one the first attempt started from
    assert resume_from_last(["ckpt_path=/a/init.ckpt", "seed=1"], replace=True) == ["seed=1", "ckpt_path=last"]


def test_lightning_requeues_nothing_in_slurm_batch_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert lightning_cluster_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: Lightning treats it as no SLURM job
    assert lightning_cluster_plugins() == []
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    (environment,) = lightning_cluster_plugins()
    assert environment.auto_requeue is False


def test_auto_watches_only_jobs_of_the_requeueing_launchers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("DCGAN_REQUEUE", raising=False)  # plain submitit_slurm: its requeue would restart the run
    assert RequeueOnSignal()._watched() is None
    monkeypatch.setenv("DCGAN_REQUEUE", "1")
    assert RequeueOnSignal()._watched() == signal.SIGUSR2


def test_requeue_signal_name_is_checked() -> None:
    with pytest.raises(ValueError, match=r"^signal='USR9': expected auto, off or a signal name"):
        RequeueOnSignal(signal="USR9")


def test_the_requeue_signal_checkpoints_at_a_batch_boundary_then_hands_over(make_cfg, tmp_path: Path) -> None:
    """What a submitit job does on USR2, in this process: submitit's handler is stood in for by one that
    records what it found on disk and exits like submitit does; the checkpoint then resumes exactly."""
    handed_over: list[tuple[int, int]] = []
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"

    def submitit_like(signum: int, frame: object) -> None:
        handed_over.append((signum, load(last)["global_step"]))
        sys.exit(-1)

    requeue = ["callbacks.requeue.signal=SIGUSR2", "callbacks.requeue.every_n_batches=4"]
    train(make_cfg([*RUN, "trainer.max_steps=40"], run_dir=tmp_path / "straight"))
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(SystemExit) as stopped:
            cfg = make_cfg(
                [*RUN, *requeue, "trainer.max_steps=40", *signal_at(10, "SIGUSR2")], run_dir=tmp_path / "first"
            )
            train(cfg)
        assert signal.getsignal(signal.SIGUSR2) is submitit_like, "the callback puts the handler back"
    finally:
        signal.signal(signal.SIGUSR2, previous)

    assert stopped.value.code == -1
    # signalled after batch 5 (step 10); the next check is after batch 8: that is where it saved, then handed over
    assert handed_over == [(signal.SIGUSR2, 16)]
    cfg = make_cfg([*RUN, "trainer.max_steps=40", "ckpt_path=last"], run_dir=tmp_path / "first")
    train(cfg)
    assert_same_weights(load(tmp_path / "straight" / "checkpoints" / "last.ckpt"), load(last))


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise KeyboardInterrupt  # stands in for a signal arriving in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "x": Unpicklable()}, target)
    assert torch.load(target, weights_only=False)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no partial file left behind"


@pytest.mark.slow
def test_sigterm_mid_run_then_the_printed_command_resumes_at_the_same_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # in a process of its own like the others: one thread each, so the same float reductions
    train_py([*ARGS, "trainer.max_steps=40", f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    first = train_py([*ARGS, "trainer.max_steps=40", f"hydra.run.dir={run}", *signal_at(20)], tmp_path, check=False)
    output = first.stdout + first.stderr

    assert first.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 20
    fresh = next(line for line in output.splitlines() if "Fresh run." in line)
    stopped = next(line for line in output.splitlines() if "Stopped by SIGTERM" in line)
    command = stopped.split("Continue with: ", 1)[1]
    assert command == fresh.split("continue it with: ", 1)[1]
    assert command.endswith(f"hydra.run.dir={run} ckpt_path=last")

    argv = shlex.split(command)
    assert argv[:2] == ["python", "train.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert_same_weights(
        load(tmp_path / "straight" / "checkpoints" / "last.ckpt"), load(run / "checkpoints" / "last.ckpt")
    )


@pytest.mark.slow
def test_a_sweep_killed_in_its_second_job_reissued_skips_the_first_and_resumes_the_second(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    probe = [
        "+callbacks.probe._target_=tests.probes.RankProbe",
        "+callbacks.probe.out=${hydra:runtime.output_dir}/probe",
    ]
    # job 0 runs to step 40; job 1 is sent SIGTERM at step 20, which stops the whole sweep
    command = [
        "-m",
        *ARGS,
        "trainer.max_steps=40",
        f"hydra.sweep.dir={sweep}",
        *probe,
        "+callbacks.signal._target_=tests.probes.SignalAt",
        "+callbacks.signal.step=1000,20",
    ]
    first = train_py(command, tmp_path, check=False)
    assert first.returncode == 128 + signal.SIGTERM, (first.stdout + first.stderr)[-3000:]
    assert load(sweep / "0" / "checkpoints" / "last.ckpt")["global_step"] == 40
    assert load(sweep / "1" / "checkpoints" / "last.ckpt")["global_step"] == 20
    job0_files = {p.name: p.stat().st_mtime_ns for p in (sweep / "0" / "checkpoints").iterdir() if "last" not in p.name}

    train_py([*command, "ckpt_path=last"], tmp_path)
    job0 = json.loads((sweep / "0" / "probe" / "rank0.json").read_text())
    job1 = json.loads((sweep / "1" / "probe" / "rank0.json").read_text())
    assert job0["first_step"] is None and job0["global_step"] == 40, "the finished job trained no batch"
    assert {p.name: p.stat().st_mtime_ns for p in (sweep / "0" / "checkpoints").iterdir() if "last" not in p.name} == (
        job0_files
    )
    assert job1["first_step"] == 20 and job1["global_step"] == 40, "the killed job continued from its step"


@pytest.mark.slow
def test_kill_9_while_last_ckpt_is_written_leaves_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    run, marker = tmp_path / "run", tmp_path / "saves"
    slow = [
        "+callbacks.slow._target_=tests.probes.SlowSaves",
        "+callbacks.slow.seconds=4",
        f"+callbacks.slow.marker={marker}",
    ]
    every_10 = [*ARGS, "callbacks.checkpoint.every_n_train_steps=10", f"hydra.run.dir={run}"]
    args = [*every_10, "trainer.max_steps=400", *slow]
    tiny = [o for o in TINY if not o.startswith("trainer.devices")]
    cmd = [sys.executable, "train.py", *tiny, "trainer.devices=1", f"paths.cache_dir={tmp_path / 'cache'}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # saves: 1 step0000010.ckpt, 2 its last.ckpt, 3 step0000020.ckpt, 4 last.ckpt again: kill halfway into 4
        deadline = time.time() + 120
        while not (marker.is_file() and marker.read_text() == "4"):
            assert proc.poll() is None and time.time() < deadline, "the run ended before its fourth save"
            time.sleep(0.05)
        time.sleep(2)
        proc.kill()
    finally:
        proc.wait()

    partial = [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
    assert partial, "the kill landed in the middle of a write"
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 10, "the previous last.ckpt, whole"
    resumed = train_py([*every_10, "trainer.max_steps=30", "ckpt_path=last"], tmp_path)
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 30
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(PARTIAL_SUFFIX)], "the leftover removed"
    assert f"Removed {run / 'checkpoints' / partial[0]}" in resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_a_job_signalled_before_its_time_limit_is_requeued_and_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """hydra/launcher=slurm's path through submitit's local executor: USR2 30 s before the 1-minute limit,
    last.ckpt at a batch boundary, requeue, resume from it, and the same weights as a run never stopped."""
    steps = ["trainer.max_steps=600", "trainer.max_epochs=-1"]  # 300 batches of >= 0.1 s: past the signal at 30 s
    train_py([*ARGS, *steps, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    sweep = tmp_path / "sweep"
    slow = ["+callbacks.slow._target_=tests.probes.SlowBatches", "+callbacks.slow.seconds=0.1"]
    launcher = ["hydra/launcher=slurm_local", "hydra.launcher.timeout_min=1", "callbacks.requeue.every_n_batches=5"]
    train_py(["-m", *launcher, *ARGS, *steps, *slow, f"hydra.sweep.dir={sweep}", "seed=42"], tmp_path, timeout=400)

    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    stops = [
        int(line.split("global step ")[1].split(":")[0]) for line in logs.splitlines() if "received: stopped" in line
    ]
    assert stops and all(0 < s < 600 for s in stops), logs[-3000:]
    assert "Requeued job" in logs
    final = load(sweep / "0" / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 600
    assert_same_weights(load(tmp_path / "straight" / "checkpoints" / "last.ckpt"), final)
