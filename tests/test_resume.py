from pathlib import Path

import torch

from dcgan.cli import train
from tests.conftest import TINY

# 256-image batches of the 1,797 digits: 7 batches an epoch, so 10 batches (20 global steps) stop
# mid-epoch 1 and 20 batches (40 global steps) end mid-epoch 2.
RUN = [*TINY, "data.batch_size=256", "callbacks.samples.every_n_steps=0"]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_resume_continues_exactly_like_an_uninterrupted_run(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*RUN, "trainer.max_steps=40"], run_dir=tmp_path / "straight"))
    train(make_cfg([*RUN, "trainer.max_steps=20"], run_dir=tmp_path / "first"))
    halfway = checkpoint(tmp_path / "first")
    train(
        make_cfg(
            [*RUN, "trainer.max_steps=40", f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}"],
            run_dir=tmp_path / "resumed",
        )
    )
    straight, resumed = checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "resumed")

    assert halfway["global_step"] == 20
    # the data position: 3 batches into the second pass over the data (7 + 3 = 10 batches)
    assert halfway["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "consumed": 3}]
    assert resumed["global_step"] == straight["global_step"] == 40
    assert resumed["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 2, "consumed": 6}]
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
