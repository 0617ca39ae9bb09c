"""CUDA-only checks (marker ``gpu``; skipped cleanly without CUDA): bf16 on the GPU, channels_last with cuDNN,
and NCCL DDP with SyncBatchNorm when two GPUs exist. ``bench/gpu_check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch

from dcgan.tasks.train import train
from tests.conftest import TINY, train_py

pytestmark = pytest.mark.gpu

GPU = [o for o in TINY if not o.startswith("trainer.accelerator")] + ["trainer.accelerator=gpu"]
RUN = [*GPU, "trainer.max_steps=20", "trainer.log_every_n_steps=1", "~callbacks.quality", "~callbacks.best"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)),
    reason="needs a GPU with native bf16 (sm80+)",
)
def test_bf16_mixed_trains_on_the_gpu(make_cfg, tmp_path: Path) -> None:
    dtypes = ["+callbacks.dtypes._target_=tests.test_gpu.ActivationDtypes"]
    ActivationDtypes.seen.clear()
    metrics = train(make_cfg([*RUN, *dtypes, "trainer.precision=bf16-mixed"]))
    assert math.isfinite(metrics["loss/d"]) and math.isfinite(metrics["loss/g"])
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "run").values() if v.is_floating_point())
    # autocast really ran: D's convolutions computed in bf16 (a run with autocast off gives float32 here)
    assert ActivationDtypes.seen and set(ActivationDtypes.seen) == {torch.bfloat16}, ActivationDtypes.seen


class ActivationDtypes(L.Callback):
    """Records the dtype of the output of D's convolutions during training steps."""

    seen: ClassVar[list[torch.dtype]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for module in pl_module.discriminator.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_hook(lambda m, i, out: ActivationDtypes.seen.append(out.dtype))


def test_the_headline_single_gpu_run_end_to_end(tmp_path: Path) -> None:
    """``python train.py trainer=gpu`` as the README gives it: the defaults (bf16 where native, channels_last,
    the quality monitor with its classifier), a short run, a checkpoint that generate.py turns into a grid."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", "trainer=gpu", "trainer.max_epochs=2", f"hydra.run.dir={run}"]
    proc = subprocess.run(
        [*cmd, f"paths.cache_dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True, timeout=200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # the full defaults, not the tests' TINY sizes
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] > 0
    out = tmp_path / "gen"
    cmd = [sys.executable, "generate.py", f"ckpt_path={last}", f"out={out}", "grid=16", "device=cuda"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "grid.png").is_file()


class MemoryFormat(L.Callback):
    """Records, at the end of training, where D's first convolution with more than one input channel kept its weight
    and whether that weight was channels_last (NHWC): ``(is_cuda, channels_last)``. (A 1-channel conv's NCHW weight
    passes the channels_last test too, so the first conv of a digits D would always say yes.)"""

    seen: ClassVar[list[tuple[bool, bool]]] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        conv = next(
            m for m in pl_module.discriminator.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
        )
        MemoryFormat.seen.append((conv.weight.is_cuda, conv.weight.is_contiguous(memory_format=torch.channels_last)))


def test_channels_last_with_cudnn_benchmark_trains_like_contiguous(make_cfg, tmp_path: Path) -> None:
    fmt = ["+callbacks.fmt._target_=tests.test_gpu.MemoryFormat"]
    MemoryFormat.seen.clear()
    torch.backends.cudnn.benchmark = True
    try:
        nhwc = train(make_cfg([*RUN, *fmt, "model.channels_last=true", "trainer.precision=32-true"], tmp_path / "a"))
        nchw = train(make_cfg([*RUN, *fmt, "model.channels_last=false", "trainer.precision=32-true"], tmp_path / "b"))
    finally:
        torch.backends.cudnn.benchmark = False
    assert MemoryFormat.seen == [(True, True), (True, False)]
    assert math.isfinite(nhwc["loss/d"]) and math.isfinite(nchw["loss/d"])
    # the same seed and data: the two memory formats take the same path up to cuDNN's kernel choice
    assert abs(nhwc["loss/d"] - nchw["loss/d"]) < 0.05 * max(1.0, abs(nchw["loss/d"]))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_nccl_ddp_with_sync_batchnorm_keeps_ranks_identical(tmp_path: Path) -> None:
    ddp = ["trainer.accelerator=gpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.sync_batchnorm=true"]
    probe = ["+callbacks.probe._target_=tests.probes.RankProbe", f"+callbacks.probe.out={tmp_path / 'p'}"]
    run = tmp_path / "run"
    train_py([*ddp, "trainer.max_steps=12", f"hydra.run.dir={run}", *probe], tmp_path)
    ranks = [json.loads((tmp_path / "p" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["batches"] != ranks[1]["batches"]
    g0, g1 = (torch.load(tmp_path / "p" / f"rank{r}_g.pt") for r in range(2))
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], rtol=0, atol=0, msg=name)
    # each rank saw its own batches, so only synchronised BatchNorm gives both ranks the same running statistics
    b0, b1 = (torch.load(tmp_path / "p" / f"rank{r}_d_buffers.pt") for r in range(2))
    stats = [k for k in b0 if k.endswith("running_mean")]
    assert stats and all(torch.allclose(b0[k], b1[k], atol=1e-5) for k in stats)


def test_the_gpus_launcher_runs_two_jobs_side_by_side_on_one_gpu(tmp_path: Path) -> None:
    """hydra.launcher.jobs_per_device=2: two jobs share GPU 0 at the same time, each in its own process."""
    sweep = tmp_path / "sweep"
    probe = ["+callbacks.probe._target_=tests.probes.RankProbe", "+callbacks.probe.out=${paths.output_dir}/probe"]
    args = ["-m", "hydra/launcher=gpus", "hydra.launcher.accelerator=gpu", "hydra.launcher.device_count=1"]
    args += [
        "hydra.launcher.jobs_per_device=2",
        "seed=1,2",
        "trainer.max_steps=200",
        *probe,
        f"hydra.sweep.dir={sweep}",
    ]
    args += ["+callbacks.meet._target_=tests.probes.Meet", f"+callbacks.meet.folder={tmp_path / 'meet'}"]
    args += ["+callbacks.meet.count=2", "+callbacks.meet.timeout_s=60"]
    train_py(args, tmp_path)  # the slot overrides trainer.accelerator=gpu (after the tests' TINY cpu)
    met = [json.loads(p.read_text()) for p in sorted((tmp_path / "meet").glob("*.json"))]
    assert [m["met"] for m in met] == [True, True], f"the two jobs ran one after the other: {met}"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [json.loads((job / "probe" / "rank0.json").read_text())["global_step"] for job in jobs] == [200, 200]
