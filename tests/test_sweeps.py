"""Hydra multiruns through ``train.py``: the basic launcher, the parallel ``gpus`` launcher, Optuna, SLURM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dcgan.platform.configs import CONF_DIR
from dcgan.platform.slots import SlotPlan, hold_slot, plan_slots
from hydra_plugins.dcgan_launcher.gpus import GpuLauncher
from tests.conftest import ROOT, train_py

PROBE = ["+callbacks.probe._target_=tests.probes.RankProbe", "+callbacks.probe.out=${paths.output_dir}/probe"]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.sync_batchnorm=false"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_dir(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    train_py(["-m", "model.optim.lr=1e-4,2e-4", "trainer.max_steps=4", f"hydra.sweep.dir={sweep}"], tmp_path)
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.0001", "0.0002"), strict=True):
        assert f"model.optim.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert len(list(job.rglob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_a_failing_job_leaves_the_finished_ones_complete(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        ["-m", "model.schedule.n_critic=1,0", "trainer.max_steps=4", f"hydra.sweep.dir={sweep}"], tmp_path, check=False
    )
    assert proc.returncode != 0
    assert "model.schedule.n_critic=0: expected an integer >= 1" in proc.stderr
    first = sweep / "0"
    assert (first / "checkpoints" / "last.ckpt").is_file() and list(first.rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_multirun_of_ddp_jobs(tmp_path: Path) -> None:
    """Lightning's DDP re-launch must not re-run the sweep: each job is one 2-rank run in its own dir."""
    sweep = tmp_path / "sweep"
    train_py(["-m", "seed=1,2", *DDP, "trainer.max_steps=4", f"hydra.sweep.dir={sweep}", *PROBE], tmp_path)
    assert [j.name for j in job_dirs(sweep)] == ["0", "1"]
    for job in job_dirs(sweep):
        seen = [json.loads((job / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
        assert [s["world_size"] for s in seen] == [2, 2]
        assert len(list(job.rglob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_gpus_launcher_runs_cpu_jobs_side_by_side(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    train_py(
        [
            "-m",
            "hydra/launcher=gpus",
            "hydra.launcher.device_count=2",
            "seed=1,2",
            "trainer.max_steps=20",
            *PROBE,
            "+callbacks.meet._target_=tests.probes.Meet",
            f"+callbacks.meet.folder={tmp_path / 'meet'}",
            "+callbacks.meet.count=2",
            "+callbacks.meet.timeout_s=60",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    jobs = job_dirs(sweep)
    met = [json.loads(p.read_text()) for p in sorted((tmp_path / "meet").glob("*.json"))]
    assert [m["met"] for m in met] == [True, True], f"the two jobs ran one after the other: {met}"
    spans = [json.loads((job / "probe" / "rank0.json").read_text()) for job in jobs]
    assert [s["threads"] for s in spans] == [1, 1], "2 cores shared by 2 jobs: one thread each"
    slots = sorted(line.split("Launcher: ")[1] for job in jobs for line in (job / "train.log").read_text().splitlines()
                   if "Launcher: " in line)  # fmt: skip
    assert slots == ["slot 1 of 2: CPU cores [0]", "slot 2 of 2: CPU cores [1]"]


@pytest.mark.slow
def test_gpus_launcher_runs_each_job_in_a_fresh_process_that_sees_only_its_gpu(tmp_path: Path) -> None:
    """GPU slots with CUDA mocked away: the launcher's own CUDA_VISIBLE_DEVICES is 5,7 (as a scheduler would set
    it); each of 3 jobs on 2 one-GPU slots runs in a process of its own that sees one of them, as device 0."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "tests.apps.record_env", "-m", "hydra/launcher=gpus", "hydra.launcher.accelerator=gpu"]
    cmd += ["hydra.launcher.device_count=2", "seed=1,2,3", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "5,7"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((job / "where.json").read_text()) for job in job_dirs(sweep)]
    assert len({s["pid"] for s in seen} | {os.getpid()}) == 4, "a fresh process per job"
    assert sorted(s["cuda_visible_devices"] for s in seen) in (["5", "5", "7"], ["5", "7", "7"])
    assert all(s["accelerator"] == "gpu" and s["devices"] == [0] for s in seen)
    slots = {s["cuda_visible_devices"]: s["slot"] for s in seen}
    assert slots == {
        "5": "slot 1 of 2: GPUs [0] (CUDA_VISIBLE_DEVICES=5)",
        "7": "slot 2 of 2: GPUs [1] (CUDA_VISIBLE_DEVICES=7)",
    }


def test_slot_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # a runner's own would renumber the GPUs
    eight = plan_slots("gpu", device_count=8, devices_per_job=2, n_jobs=None, num_jobs=10)
    assert eight.groups == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert eight.overrides(2) == ["trainer.accelerator=gpu", "trainer.devices=[0,1]"]  # all its process sees
    assert eight.environment(2) == {"CUDA_VISIBLE_DEVICES": "4,5"}
    assert eight.describe(2) == "slot 3 of 4: GPUs [4, 5] (CUDA_VISIBLE_DEVICES=4,5)"
    assert plan_slots("gpu", 2, 1, None, 6, jobs_per_device=2).groups == ((0,), (1,), (0,), (1,))
    assert plan_slots("gpu", 1, 1, 2, 6, jobs_per_device=3).groups == ((0,), (0,))  # n_jobs caps the sharing too
    with pytest.raises(ValueError, match="jobs_per_device=0: expected an integer >= 1"):
        plan_slots("gpu", 1, 1, None, 2, jobs_per_device=0)
    behind = SlotPlan("gpu", ((0,), (1,)), visible=("3", "GPU-9f"))  # under a scheduler's CUDA_VISIBLE_DEVICES
    assert behind.environment(1) == {"CUDA_VISIBLE_DEVICES": "GPU-9f"}
    assert plan_slots("gpu", 3, 2, None, 4).groups == ((0, 1),)  # the odd GPU stays idle
    assert plan_slots("gpu", 4, 1, 2, 4).groups == ((0,), (1,))  # n_jobs caps it
    assert plan_slots("cpu", 8, None, None, 3).groups == ((0, 1), (2, 3), (4, 5))
    assert plan_slots("cpu", 2, None, None, 5).groups == ((0,), (1,))
    cpu = plan_slots("cpu", 2, None, None, 2)
    assert cpu.overrides(0) == [] and cpu.describe(1) == "slot 2 of 2: CPU cores [1]"
    with pytest.raises(ValueError, match="devices_per_job=4, but this machine has 2 GPU"):
        plan_slots("gpu", 2, 4, None, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert plan_slots("gpu", 2, 1, None, 2).environment(1) == {"CUDA_VISIBLE_DEVICES": "5"}
    with pytest.raises(ValueError, match="device_count=4, but CUDA_VISIBLE_DEVICES names 2 GPU"):
        plan_slots("gpu", 4, 1, None, 2)


@pytest.mark.slow
def test_gpu_launcher_takes_devices_per_job_from_the_trainer(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    launcher = GpuLauncher(accelerator="gpu", device_count=8)
    launcher.config = make_cfg(["trainer.devices=4"])
    assert launcher.plan(num_jobs=5).groups == ((0, 1, 2, 3), (4, 5, 6, 7))


def test_each_job_holds_a_distinct_slot_until_it_ends(tmp_path: Path) -> None:
    held: list[int] = []
    release = threading.Event()

    def job() -> None:
        with hold_slot(tmp_path / "slots", 2, poll_s=0.01) as slot:
            held.append(slot)
            release.wait(5)

    first = [threading.Thread(target=job) for _ in range(2)]
    for t in first:
        t.start()
    while len(held) < 2:
        time.sleep(0.01)
    late = threading.Thread(target=job)
    late.start()
    time.sleep(0.2)
    assert sorted(held) == [0, 1], "a third job must wait while both slots are taken"
    release.set()
    for t in [*first, late]:
        t.join(5)
    assert len(held) == 3 and held[2] in (0, 1)


@pytest.mark.slow
def test_optuna_search_of_two_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and results["best_value"] > 0
    searched = set(results["best_params"])
    assert {"model.optim.lr", "model.optim.betas.0", "model.schedule.n_critic"} <= searched
    assert "data.batch_size" not in searched  # set on the command line (TINY): fixed, not searched
    assert len(job_dirs(sweep)) == 2, proc.stdout[-2000:]


def test_slurm_launcher_config_composes() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.dcgan_launcher.requeue.SlurmRequeueLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition) == (4, 4, "gpu")
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s == 120  # a timed-out job is requeued


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    train_py(
        ["-m", "hydra/launcher=submitit_local", "seed=1,2", "trainer.max_steps=4", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        timeout=600,
    )
    assert all((job / "checkpoints" / "last.ckpt").is_file() for job in job_dirs(sweep))
    assert len(job_dirs(sweep)) == 2
