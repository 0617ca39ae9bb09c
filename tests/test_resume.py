from pathlib import Path

import numpy as np
import pytest
import torch

from dcgan.tasks.train import train
from tests.conftest import TINY

# 256-image batches of the 1,797 digits: 7 batches an epoch, so 10 batches (20 global steps) stop
# 3 batches into the second pass and 20 batches (40 global steps) end 6 batches into the third.
RUN = [*TINY, "data.batch_size=256", "callbacks.samples.every_n_steps=0", "callbacks.checkpoint.every_n_train_steps=20"]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def data_position(ckpt: dict) -> tuple[int, int]:
    (state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    return state["epoch"], state["consumed"]


@pytest.mark.parametrize(
    ("first_max_steps", "resume_from"),
    [
        (20, "last.ckpt"),  # written when training ended at max_steps
        (30, "step0000020.ckpt"),  # written by the periodic schedule in the middle of a run
    ],
)
def test_resume_continues_exactly_like_an_uninterrupted_run(
    make_cfg, tmp_path: Path, first_max_steps: int, resume_from: str
) -> None:
    train(make_cfg([*RUN, "trainer.max_steps=40"], run_dir=tmp_path / "straight"))
    train(make_cfg([*RUN, f"trainer.max_steps={first_max_steps}"], run_dir=tmp_path / "first"))
    halfway_path = tmp_path / "first" / "checkpoints" / resume_from
    halfway = load(halfway_path)
    train(make_cfg([*RUN, "trainer.max_steps=40", f"ckpt_path={halfway_path}"], run_dir=tmp_path / "resumed"))
    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")

    assert halfway["global_step"] == 20
    assert data_position(halfway) == (1, 3)  # 7 + 3 batches
    assert resumed["global_step"] == straight["global_step"] == 40
    assert data_position(resumed) == data_position(straight) == (2, 6)  # 7 + 7 + 6 batches
    assert torch.equal(resumed["state_dict"]["fixed_noise"], halfway["state_dict"]["fixed_noise"])
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)
    for opt_straight, opt_resumed in zip(straight["optimizer_states"], resumed["optimizer_states"], strict=True):
        for pid, state in opt_straight["state"].items():
            assert int(opt_resumed["state"][pid]["step"]) == int(state["step"]) == 20
            torch.testing.assert_close(opt_resumed["state"][pid]["exp_avg_sq"], state["exp_avg_sq"], atol=1e-6, rtol=0)
    # and the halfway state really was different: the test would notice a resume that restarts from scratch
    first_layer = "generator.net.0.weight"
    assert not torch.equal(halfway["state_dict"][first_layer], straight["state_dict"][first_layer])


def test_resume_with_another_batch_size_is_refused(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*RUN, "trainer.max_steps=4"], run_dir=tmp_path / "first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"batch_size=256 \(now 128\)"):
        train(make_cfg([*RUN, "data.batch_size=128", "trainer.max_steps=8", f"ckpt_path={ckpt}"]))


def image_folder(root: Path, n: int = 300) -> Path:
    """``n`` distinct 20x20 RGB PNGs (decoded, resized to 16 and cropped by the workers)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
    return root


# 300 images in batches of 16: 18 batches a pass, so 24 global steps (12 batches) stop inside the first
# pass and 40 (20 batches) end 2 batches into the second. Decoded by 2 DataLoader workers, no cache.
def folder_run(data_dir: Path) -> list[str]:
    return [
        *TINY,
        "data=folder",
        f"data.data_dir={data_dir}",
        "data.image_size=16",
        "data.batch_size=16",
        "data.num_workers=2",
        "data.cache=false",
        "callbacks.samples.every_n_steps=0",
        "~callbacks.quality",
    ]


def test_resume_on_the_worker_decoded_path_is_exact(make_cfg, tmp_path: Path) -> None:
    run = folder_run(image_folder(tmp_path / "images"))
    train(make_cfg([*run, "trainer.max_steps=40"], run_dir=tmp_path / "straight"))
    train(make_cfg([*run, "trainer.max_steps=24"], run_dir=tmp_path / "first"))
    halfway_path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(make_cfg([*run, "trainer.max_steps=40", f"ckpt_path={halfway_path}"], run_dir=tmp_path / "resumed"))
    halfway = load(halfway_path)
    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")

    assert data_position(halfway) == (0, 12)
    assert data_position(resumed) == data_position(straight) == (1, 2)
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)
    first_layer = "generator.net.0.weight"
    assert not torch.equal(halfway["state_dict"][first_layer], straight["state_dict"][first_layer])
