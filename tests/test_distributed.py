"""DDP on the CPU (gloo): two processes through ``train.py``, as a user starts them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY
from tests.conftest import train_py as run_train

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.sync_batchnorm=false"]


def probe(out: Path) -> list[str]:
    return ["+callbacks.probe._target_=tests.probes.RankProbe", f"+callbacks.probe.out={out}"]


def ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def scalars(run: Path) -> dict[str, list[float]]:
    (event_file,) = run.rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [s.value for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_two_process_ddp_run_resumes(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = run_train([*DDP, "trainer.max_steps=8", f"hydra.run.dir={runs / 'a'}", *probe(tmp_path / "a")], tmp_path)

    assert [p.name for p in runs.iterdir()] == ["a"], "exactly one run dir, shared by both ranks"
    events = list((runs / "a").rglob("events.out.tfevents.*"))
    assert len(events) == 1, f"one TensorBoard run, not one per rank: {events}"
    output = first.stdout + first.stderr
    assert output.count("Run dir:") == 2  # before and after training, from rank zero only
    assert "ddp: 2 process(es) per node x 1 node(s)" in output

    a0, a1 = ranks(tmp_path / "a")
    assert (a0["world_size"], a1["world_size"]) == (2, 2)
    assert a0["batches"] != a1["batches"], "each rank must see its own shard of the data"
    assert not set(a0["noise"]) & set(a1["noise"]), "each rank must draw its own z"
    g0, g1 = (torch.load(tmp_path / "a" / f"rank{r}_g.pt") for r in range(2))
    for name in g0:  # gradients were all-reduced, so every step kept the ranks' weights equal
        torch.testing.assert_close(g0[name], g1[name], rtol=0, atol=0, msg=f"{name} differs between ranks")

    ckpt = runs / "a" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    run_train(
        [*DDP, "trainer.max_steps=12", f"ckpt_path={ckpt}", f"hydra.run.dir={runs / 'b'}", *probe(tmp_path / "b")],
        tmp_path,
    )
    b0, b1 = ranks(tmp_path / "b")
    assert b0["first_step"] == b1["first_step"] == 8, "both ranks resume from the checkpoint's step"
    assert b0["global_step"] == b1["global_step"] == 12


@pytest.mark.slow
def test_ddp_rank_zero_sees_the_same_config_on_every_rank(tmp_path: Path) -> None:
    """The other ranks run the job's resolved config, so overrides and defaults reach them unchanged."""
    run_train(
        [*DDP, "trainer.max_steps=2", "seed=7", f"hydra.run.dir={tmp_path / 'run'}", *probe(tmp_path / "p")],
        tmp_path,
    )
    saved = (tmp_path / "run" / ".hydra" / "ddp_rank_config.yaml").read_text()
    assert "seed: 7" in saved and "${" not in saved
    assert (tmp_path / "run" / "train_rank1.log").is_file()


@pytest.mark.slow
def test_ddp_keeps_ranks_in_step_with_penalties_augment_and_labels(tmp_path: Path) -> None:
    """The gradient penalty and R1 (double backward), DiffAugment and a conditional projection D under DDP:
    every rank ends with the same G and D, and the penalties were logged."""
    variants = [
        "experiment=wgan_gp",
        "model/penalty=[gp,r1]",
        "model.penalty.r1.interval=1",
        "model.augment.policy=[translation,cutout]",
    ]
    variants += ["model.num_classes=10", "trainer.max_steps=12", "trainer.log_every_n_steps=1"]
    run = tmp_path / "run"
    run_train([*DDP, *variants, f"hydra.run.dir={run}", *probe(tmp_path / "p")], tmp_path)

    for net in ("g", "d"):
        w0, w1 = (torch.load(tmp_path / "p" / f"rank{r}_{net}.pt") for r in range(2))
        for name in w0:
            torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0, msg=f"{net}: {name} differs between ranks")
    logged = scalars(run)
    for tag in ("loss/gp", "loss/r1", "loss/d", "loss/g"):
        assert tag in logged and all(math.isfinite(v) for v in logged[tag]), f"{tag}: {logged.get(tag)}"


@pytest.mark.slow
def test_ddp_resume_on_the_worker_decoded_path_is_exact(tmp_path: Path) -> None:
    """Two ranks decoding an image folder in DataLoader workers: stopped and resumed equals uninterrupted."""
    from tests.test_resume import data_position, folder_run, image_folder, load

    # 300 images, 2 ranks of 150, batches of 16: 9 batches a pass; 24 global steps stop 3 batches into the
    # second pass and 40 end 2 batches into the third.
    run = [o for o in folder_run(image_folder(tmp_path / "images")) if o not in TINY]  # train_py adds TINY
    runs = tmp_path / "runs"
    run_train([*DDP, *run, "trainer.max_steps=40", f"hydra.run.dir={runs / 'straight'}"], tmp_path)
    run_train([*DDP, *run, "trainer.max_steps=24", f"hydra.run.dir={runs / 'first'}"], tmp_path)
    halfway = runs / "first" / "checkpoints" / "last.ckpt"
    run_train(
        [*DDP, *run, "trainer.max_steps=40", f"ckpt_path={halfway}", f"hydra.run.dir={runs / 'resumed'}"], tmp_path
    )
    straight, resumed = (load(runs / r / "checkpoints" / "last.ckpt") for r in ("straight", "resumed"))

    assert data_position(load(halfway)) == (1, 3)
    assert data_position(resumed) == data_position(straight) == (2, 2)
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_ddp_ranks_stop_together_on_a_requeue_signal_one_of_them_received(tmp_path: Path) -> None:
    """USR2 reaches rank 1 only: both ranks stop at the same check, write one last.ckpt, and a resume from it
    ends where an uninterrupted two-rank run ends."""
    from tests.test_resume import RUN, data_position, load

    run = [o for o in RUN if o not in TINY] + ["trainer.max_steps=40"]
    signal = ["+callbacks.signal._target_=tests.probes.SignalAt", "+callbacks.signal.step=10"]
    signal += ["+callbacks.signal.signal=SIGUSR2", "+callbacks.signal.rank=1"]
    requeue = ["callbacks.requeue.signal=SIGUSR2", "callbacks.requeue.every_n_batches=4"]
    runs = tmp_path / "runs"
    run_train([*DDP, *run, f"hydra.run.dir={runs / 'straight'}"], tmp_path)
    stopped = run_train([*DDP, *run, *requeue, *signal, f"hydra.run.dir={runs / 'a'}"], tmp_path, check=False)
    assert stopped.returncode == 128 + 12, (stopped.stdout + stopped.stderr)[-3000:]  # 12: SIGUSR2
    last = runs / "a" / "checkpoints" / "last.ckpt"
    # 2 ranks of 898 digits in batches of 256: 3 batches a pass. Signalled after batch 5 (step 10); checked
    # after batch 8, the next multiple of 4.
    assert load(last)["global_step"] == 16 and data_position(load(last)) == (2, 2)
    run_train([*DDP, *run, "ckpt_path=last", f"hydra.run.dir={runs / 'a'}"], tmp_path)
    straight, resumed = (load(runs / r / "checkpoints" / "last.ckpt") for r in ("straight", "a"))
    assert resumed["global_step"] == straight["global_step"] == 40
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_ddp_steps_between_logging_batches_make_no_collective_call(tmp_path: Path) -> None:
    """The per-step logs are averaged over ranks only on the batches whose values reach the loggers: one
    all-reduce there, none elsewhere (sync_dist on every step cost a barrier plus an all-reduce per key)."""
    count = ["+callbacks.count._target_=tests.probes.CollectiveCount", f"+callbacks.count.out={tmp_path / 'c'}"]
    # 2 ranks of 898 digits in batches of 32: 28 batches a pass; 30 batches; logs and checks every 10th batch
    run = ["~callbacks.quality", "callbacks.samples.every_n_steps=0", "trainer.max_steps=60"]
    run += ["trainer.log_every_n_steps=10", "callbacks.checkpoint.every_n_train_steps=0"]
    run_train([*DDP, *run, *count, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    for rank in range(2):
        per_batch = json.loads((tmp_path / "c" / f"rank{rank}_collectives.json").read_text())
        assert len(per_batch) == 30
        # Lightning 2.6 itself broadcasts a SIGTERM flag at every batch: one small collective, not ours
        assert all(calls.get("broadcast", 0) <= 1 for calls in per_batch), per_batch
        busy = {b for b, calls in enumerate(per_batch) if set(calls) - {"broadcast"}}
        # batches 9, 19, 29: the logs' one all-reduce and the divergence / Ctrl-C checks; 27: the epoch's end
        assert busy <= {9, 19, 27, 29}, per_batch
        assert {9, 19} <= busy
        assert per_batch[9].get("all_reduce", 0) <= 3, per_batch[9]  # the logs, the divergence and Ctrl-C checks
        assert per_batch[9].get("all_reduce", 0) == 3, per_batch[9]  # without the logs' own: 2
