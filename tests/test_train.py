from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcgan.data import DataError
from dcgan.lightning.module import DCGAN
from dcgan.tasks.train import train
from tests.conftest import TINY


def test_fast_dev_run_digits(make_cfg) -> None:
    metrics = train(make_cfg([*TINY, "debug=fdr"]))
    assert {"loss/d", "loss/g", "d/real", "d/fake"} <= set(metrics)


def test_fast_dev_run_mnist_fixture(make_cfg, mnist_root: Path) -> None:
    metrics = train(make_cfg([*TINY, "debug=fdr", "data=mnist", f"data.data_dir={mnist_root}"]))
    assert "loss/d" in metrics


def test_fast_dev_run_real_mnist(make_cfg, real_data_dir: Path) -> None:
    metrics = train(make_cfg(["debug=fdr", "data=mnist", f"data.data_dir={real_data_dir}", "trainer.accelerator=cpu"]))
    assert "loss/d" in metrics


def test_missing_mnist_fails_before_training_with_the_fix(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MNIST train images not found"):
        train(make_cfg([*TINY, "data=mnist", f"data.data_dir={tmp_path / 'empty'}"]))
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_short_run_writes_scalars_images_and_checkpoints(make_cfg, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg([*TINY, "trainer.max_steps=24", "callbacks.samples.every_n_steps=8", "trainer.log_every_n_steps=2"]))
    (event_file,) = (run / "tensorboard").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"loss/d", "loss/g", "d/real", "d/fake"} <= set(events.Tags()["scalars"])
    grids = events.Images("samples/fixed_noise")
    assert sorted({g.step for g in grids}) == [0, 8, 16, 24]
    assert events.Images("samples/real")
    # x-axis is global_step (2 per batch): logging every 2 batches lands on steps 4, 8, ..., 24
    assert [s.step for s in events.Scalars("loss/g")] == list(range(4, 25, 4))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "samples").glob("fixed_noise_step*.png"))) == 4
    with Image.open(run / "progress.gif") as gif:  # one frame per fixed-noise grid, in order
        assert gif.n_frames == 4 and gif.size == Image.open(run / "samples" / "fixed_noise_step0000000.png").size


def test_runs_without_any_logger(make_cfg) -> None:
    metrics = train(make_cfg([*TINY, "~logger", "trainer.max_steps=4", "callbacks.samples.every_n_steps=2"]))
    assert "loss/d" in metrics


def test_runs_with_a_non_tensorboard_logger(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*TINY, "logger=csv", "trainer.max_steps=4", "trainer.log_every_n_steps=1"]))
    assert "loss/d" in (tmp_path / "run" / "csv" / "metrics.csv").read_text()


def test_checkpoint_rebuilds_the_model_without_the_run_config(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*TINY, "trainer.max_steps=4"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = DCGAN.load_from_checkpoint(ckpt, map_location="cpu")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert model.hparams.generator["ngf"] == 8  # rebuilt from the checkpoint's own hyper-parameters
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.sample().shape == (16, 1, 16, 16)


def test_periodic_checkpoints_and_an_up_to_date_last_ckpt(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*TINY, "trainer.max_steps=12", "callbacks.checkpoint.every_n_train_steps=5"]))
    ckpts = tmp_path / "run" / "checkpoints"
    # global_step moves 2 per batch (2, 4, 6, ...): every crossing of a multiple of 5 saves
    assert sorted(p.name for p in ckpts.glob("step*.ckpt")) == ["step0000006.ckpt", "step0000010.ckpt"]
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 12


def test_sync_batchnorm_on_cpu_is_refused_with_the_fix(make_cfg) -> None:
    with pytest.raises(ValueError, match="sync_batchnorm=true needs CUDA.*trainer.sync_batchnorm=false"):
        train(
            make_cfg(
                [*TINY, "trainer=ddp", "trainer.sync_batchnorm=true", "trainer.accelerator=cpu", "trainer.devices=1"]
            )
        )


@pytest.mark.parametrize("penalty", ["r1", "gp"])
def test_a_penalty_that_differentiates_twice_with_sync_batchnorm_is_refused(make_cfg, penalty: str) -> None:
    """SyncBatchNorm's backward has no derivative: refused before training, on the CPU too (checked first)."""
    cfg = [*TINY, "trainer=ddp", "trainer.sync_batchnorm=true", "trainer.accelerator=cpu", "trainer.devices=1"]
    cfg.append(f"model/penalty=[{penalty}]")
    with pytest.raises(
        ValueError, match=rf"sync_batchnorm=true with model.penalty {penalty}: .* Fix: model.discriminator.norm=none"
    ):
        train(make_cfg(cfg))
    with pytest.raises(ValueError, match="sync_batchnorm=true needs CUDA"):  # without BatchNorm in D: the CPU check
        train(make_cfg([*cfg, "model.discriminator.norm=none"]))


@pytest.mark.parametrize("data", ["cifar10", "celeba"])
def test_command_line_exits_cleanly_when_data_is_missing(tmp_path: Path, data: str) -> None:
    """python train.py data=X with no files: exit code 2, the fix on screen, no traceback."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            str(root / "train.py"),
            f"data={data}",
            f"data.data_dir={tmp_path / 'none'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "files not found" in output if data == "cifar10" else "img_align_celeba.zip" in output
    assert "Traceback" not in output
