import copy

import pytest
import torch

from dcgan.lightning.module import DCGAN
from dcgan.objective.losses import d_loss_bce
from tests.conftest import TensorDataModule, fit


def make_module(n_critic: int = 1, lr: float = 2e-4, seed: int = 0) -> DCGAN:
    torch.manual_seed(seed)
    return DCGAN(
        generator={"_target_": "dcgan.nets.Generator", "nz": 16, "ngf": 8, "image_size": 16, "channels": 1},
        discriminator={"_target_": "dcgan.nets.Discriminator", "ndf": 8, "image_size": 16, "channels": 1},
        optim={"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr, "betas": [0.5, 0.999]},
        schedule={"_target_": "dcgan.objective.Alternating", "n_critic": n_critic},
        num_fixed_samples=8,
        seed=seed,
    )


def one_batch_data(batch: int = 32) -> tuple[TensorDataModule, torch.Tensor]:
    images = torch.randint(0, 256, (batch, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return TensorDataModule(images, batch_size=batch), images.float() / 127.5 - 1


def test_one_d_step_lowers_d_loss_and_one_g_step_raises_d_of_g() -> None:
    module = make_module(lr=1e-3)
    datamodule, real = one_batch_data()
    z = module.noise(len(real))  # what training draws at global_step 0
    g_before, d_before = copy.deepcopy(module.generator), copy.deepcopy(module.discriminator)
    with torch.no_grad():
        fake = g_before(z)
        loss_before = d_loss_bce(d_before(real), d_before(fake))

    fit(module, datamodule, max_steps=2)  # one batch: one D step, then one G step

    with torch.no_grad():
        loss_after = d_loss_bce(module.discriminator(real), module.discriminator(fake))
        d_of_g_before = torch.sigmoid(module.discriminator(g_before(z))).mean()
        d_of_g_after = torch.sigmoid(module.discriminator(module.generator(z))).mean()
    assert loss_after < loss_before
    assert d_of_g_after > d_of_g_before


def test_every_batch_steps_d_and_every_n_critic_th_batch_steps_g() -> None:
    module = make_module(n_critic=3)
    datamodule, _ = one_batch_data()
    g_start = copy.deepcopy(module.generator.state_dict())
    trainer = fit(module, datamodule, max_steps=2)  # two batches of D only
    assert trainer.global_step == 2
    assert all(torch.equal(g_start[k], v) for k, v in module.generator.state_dict().items() if "weight" in k)

    module = make_module(n_critic=3)
    trainer = fit(module, datamodule, max_steps=8)  # 6 batches: 6 D steps + 2 G steps
    assert trainer.global_step == 8
    assert trainer.fit_loop.total_batch_idx + 1 == 6


def test_training_logs_losses_and_discriminator_outputs() -> None:
    module = make_module()
    datamodule, _ = one_batch_data()
    trainer = fit(module, datamodule, max_steps=2)
    metrics = trainer.callback_metrics
    assert {"loss/d", "loss/g", "d/real", "d/fake"} <= set(metrics)
    assert 0 < metrics["d/real"] < 1 and 0 < metrics["d/fake"] < 1


def test_fixed_noise_is_a_seeded_buffer_saved_in_the_state_dict() -> None:
    a, b, c = make_module(seed=3), make_module(seed=3), make_module(seed=4)
    assert "fixed_noise" in a.state_dict()
    assert a.fixed_noise.shape == (8, 16)
    assert torch.equal(a.fixed_noise, b.fixed_noise) and not torch.equal(a.fixed_noise, c.fixed_noise)


def test_sample_uses_eval_mode_and_restores_train_mode() -> None:
    module = make_module()
    module.train()
    running_mean = [m.running_mean.clone() for m in module.generator.modules() if hasattr(m, "running_mean")]
    out = module.sample()
    assert out.shape == (8, 1, 16, 16)
    assert module.generator.training
    # eval mode: BatchNorm uses (and leaves) its running statistics, so a sample does not depend on its batch
    after = [m.running_mean for m in module.generator.modules() if hasattr(m, "running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(running_mean, after, strict=True))
    torch.testing.assert_close(module.sample(module.fixed_noise[:1]), out[:1])


def test_bad_n_critic_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule.n_critic=0: expected an integer >= 1"):
        make_module(n_critic=0)
    with pytest.raises(ValueError, match="schedule.n_critic=1.5"):
        make_module(n_critic=1.5)


def test_the_schedule_counts_d_and_g_steps_from_the_optimizer_steps() -> None:
    from dcgan.objective import Alternating

    s = Alternating(n_critic=2)  # batches: D, D+G, D, D+G: optimizer steps after each 1, 3, 4, 6
    starts = [0, 1, 3, 4]
    assert [s.g_turn(t) for t in starts] == [False, True, False, True]
    assert [s.d_steps(t) for t in starts] == [0, 1, 2, 3]
    assert [s.g_steps(t) for t in starts] == [0, 0, 1, 1]


def test_a_checkpoint_of_the_pre_release_layout_is_refused_in_one_line(tmp_path) -> None:
    from dcgan.errors import UserError
    from dcgan.tasks.generate import load_model

    old = {"generator": {}, "discriminator": {}, "optim": {}, "n_critic": 1, "gp_weight": None, "r1_weight": 0.0}
    torch.save({"hyper_parameters": old, "state_dict": {}, "global_step": 10}, tmp_path / "old.ckpt")
    expected = r"pre-release .*\['gp_weight', 'n_critic', 'r1_weight'\].*Fix: retrain"
    with pytest.raises(UserError, match=expected):
        load_model(str(tmp_path / "old.ckpt"), device="cpu")
