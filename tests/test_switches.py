"""Each speed switch trains the same maths: loss trajectories match the plain fp32 run within tolerance."""

import os
import sys

import lightning as L
import pytest
import torch

from dcgan.lightning.module import DCGAN
from tests.conftest import TensorDataModule


class Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        m = trainer.callback_metrics
        self.values.append((float(m["loss/d"]), float(m["loss/g"])))


def trajectory(
    batches: int = 4,
    precision: str = "32-true",
    fused: bool | None = None,
    accelerator: str = "cpu",
    benchmark: bool | None = None,
    lr: float = 2e-4,
    callbacks: tuple[L.Callback, ...] = (),
    **switches,
) -> torch.Tensor:
    torch.manual_seed(0)
    module = DCGAN(
        generator={"_target_": "dcgan.nets.Generator", "nz": 16, "ngf": 8, "image_size": 16, "channels": 1},
        discriminator={"_target_": "dcgan.nets.Discriminator", "ndf": 8, "image_size": 16, "channels": 1},
        optim={"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr, "betas": [0.5, 0.999], "fused": fused},
        num_fixed_samples=4,
        **switches,
    )
    images = torch.randint(0, 256, (128, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    losses = Losses()
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_steps=2 * batches, precision=precision, benchmark=benchmark,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[losses, *callbacks],
    )  # fmt: skip
    trainer.fit(module, datamodule=TensorDataModule(images, batch_size=32))
    return torch.tensor(losses.values)


@pytest.fixture(scope="module")
def baseline() -> torch.Tensor:
    return trajectory()


def test_channels_last_trains_the_same(baseline: torch.Tensor) -> None:
    torch.testing.assert_close(trajectory(channels_last=True), baseline, atol=1e-4, rtol=1e-4)


def test_fused_adam_trains_the_same(baseline: torch.Tensor) -> None:
    torch.testing.assert_close(trajectory(fused=True), baseline, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_stays_close(baseline: torch.Tensor) -> None:
    """bf16 keeps ~3 significant digits, so the losses agree to a few percent over the first steps."""
    torch.testing.assert_close(trajectory(precision="bf16-mixed"), baseline, atol=0.05, rtol=0.05)


def test_compile_trains_the_same(baseline: torch.Tensor) -> None:
    torch.testing.assert_close(trajectory(compile=True), baseline, atol=1e-4, rtol=1e-4)


def test_compiled_checkpoints_keep_plain_parameter_names() -> None:
    module = DCGAN(
        generator={"_target_": "dcgan.nets.Generator", "nz": 16, "ngf": 8, "image_size": 16, "channels": 1},
        discriminator={"_target_": "dcgan.nets.Discriminator", "ndf": 8, "image_size": 16, "channels": 1},
        optim={"_target_": "torch.optim.Adam", "_partial_": True},
        compile=True,
    )
    names = set(module.state_dict())
    module.configure_model()
    assert set(module.state_dict()) == names and not any("_orig_mod" in n for n in names)


def test_the_cpu_defaults_together_stay_close(baseline: torch.Tensor) -> None:
    """channels_last + bf16 autocast, what a CPU with native bf16 trains with by default."""
    torch.testing.assert_close(trajectory(precision="bf16-mixed", channels_last=True), baseline, atol=0.05, rtol=0.05)


@pytest.fixture(scope="module")
def gpu_baseline() -> torch.Tensor:
    return trajectory(accelerator="gpu", benchmark=False)


@pytest.mark.gpu
def test_cudnn_benchmark_stays_close_on_cuda(gpu_baseline: torch.Tensor) -> None:
    """Autotuning may pick other convolution algorithms, so the sums differ in rounding only."""
    torch.testing.assert_close(trajectory(accelerator="gpu", benchmark=True), gpu_baseline, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
def test_fused_adam_trains_the_same_on_cuda(gpu_baseline: torch.Tensor) -> None:
    """Fused Adam is one CUDA kernel for all parameters; the same update up to rounding."""
    torch.testing.assert_close(
        trajectory(accelerator="gpu", benchmark=False, fused=True), gpu_baseline, atol=1e-4, rtol=1e-4
    )


@pytest.mark.gpu
def test_compile_trains_the_same_on_cuda(gpu_baseline: torch.Tensor) -> None:
    """torch.compile on CUDA (Inductor's Triton kernels): the same losses up to kernel rounding."""
    torch.testing.assert_close(
        trajectory(accelerator="gpu", benchmark=False, compile=True), gpu_baseline, atol=1e-3, rtol=1e-3
    )


class ReadsOffDevice(L.Callback):
    """Counts the values the training loop copies to the host, per batch (a blocking sync on CUDA).

    Adam's step counters are host tensors by design (its ``.item()`` on them never syncs): not counted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batch = -1
        self.reads: dict[int, int] = {}
        for name in ("item", "tolist", "__float__", "__bool__", "cpu"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if f"torch{os.sep}optim{os.sep}" not in sys._getframe(1).f_code.co_filename:
                    self.reads[self.batch] = self.reads.get(self.batch, 0) + 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self.batch = trainer.fit_loop.batch_idx


def test_no_host_reads_except_at_logging_steps(monkeypatch) -> None:
    module = DCGAN(
        generator={"_target_": "dcgan.nets.Generator", "nz": 16, "ngf": 8, "image_size": 16, "channels": 1},
        discriminator={"_target_": "dcgan.nets.Discriminator", "ndf": 8, "image_size": 16, "channels": 1},
        optim={"_target_": "torch.optim.Adam", "_partial_": True},
        num_fixed_samples=4,
    )
    images = torch.randint(0, 256, (256, 1, 16, 16), dtype=torch.uint8)
    reads = ReadsOffDevice(monkeypatch)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=16, log_every_n_steps=4, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[reads],
    )  # fmt: skip
    trainer.fit(module, datamodule=TensorDataModule(images, batch_size=32))
    logging_batches = {3, 7}  # Lightning logs when (batch_idx + 1) % log_every_n_steps == 0
    quiet = {b: n for b, n in reads.reads.items() if b in range(8) and b not in logging_batches}
    assert not quiet, f"host reads in non-logging batches: {quiet}"
