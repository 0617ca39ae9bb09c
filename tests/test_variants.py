"""GAN variants: losses against hand-computed values, the penalties, spectral norm, DiffAugment, configs."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn

from dcgan.lightning.module import DCGAN
from dcgan.nets import Discriminator
from dcgan.objective import losses, penalties
from dcgan.objective.augment import DiffAugment, cutout, translation
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.train import train
from tests.conftest import TINY, TensorDataModule

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_losses_match_hand_computed_values() -> None:
    # bce: -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    bce_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    bce_g = (softplus(-0.5) + softplus(3.0)) / 2
    hinge_d = (max(0, 1 - 2.0) + max(0, 1 + 1.0)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3.0)) / 2  # 1 + 0.75
    lsgan_d = 0.5 * ((2.0 - 1) ** 2 + (-1.0 - 1) ** 2) / 2 + 0.5 * (0.5**2 + 3.0**2) / 2
    lsgan_g = 0.5 * ((0.5 - 1) ** 2 + (-3.0 - 1) ** 2) / 2
    expected = {
        "bce": (bce_d, bce_g),
        "hinge": (hinge_d, -(0.5 - 3.0) / 2),
        "lsgan": (lsgan_d, lsgan_g),
        "wgan_gp": ((0.5 - 3.0) / 2 - (2.0 - 1.0) / 2, -(0.5 - 3.0) / 2),
    }
    classes = {"bce": losses.BCE, "hinge": losses.Hinge, "lsgan": losses.LSGAN, "wgan_gp": losses.Wasserstein}
    for name, (d, g) in expected.items():
        loss = classes[name]()
        assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6), name
        assert loss.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6), name


class Linear(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so ||grad|| = ||w||."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_closed_form() -> None:
    w = torch.full((1, 2, 2), 1.5)  # ||w|| = 3
    critic = Linear(w)
    real, fake = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2)
    gp = penalties.gradient_penalty(critic, penalties.interpolates(real, fake))
    assert gp.item() == pytest.approx((3.0 - 1.0) ** 2)
    gp.backward()  # the penalty trains the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic.w.grad, 2 * (3.0 - 1.0) * w / 3.0)
    real.requires_grad_(True)
    assert penalties.r1_penalty(critic(real), real).item() == pytest.approx(9.0)  # ||w||^2


def spectral_norms(d: Discriminator) -> list[float]:
    return [
        torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in d.modules() if isinstance(m, nn.Conv2d)
    ]


def test_spectral_norm_keeps_the_largest_singular_value_near_one() -> None:
    torch.manual_seed(0)
    d = Discriminator(ndf=8, image_size=16, channels=1, spectral_norm=True)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(30):  # steps that would grow unnormalised weights; power iteration runs in each forward
        loss = -d(torch.randn(16, 1, 16, 16)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    assert all(abs(s - 1.0) < 0.1 for s in spectral_norms(d)), spectral_norms(d)
    plain = Discriminator(ndf=8, image_size=16, channels=1)
    assert max(spectral_norms(plain)) < 0.9  # N(0, 0.02) init: far from 1 without the normalisation


def test_discriminator_without_batchnorm() -> None:
    d = Discriminator(ndf=8, image_size=32, channels=3, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert d(torch.randn(2, 3, 32, 32)).shape == (2,)
    with pytest.raises(ValueError, match="norm=layer: expected batch or none"):
        Discriminator(norm="layer")


def test_diffaugment_is_differentiable_random_and_off_in_eval() -> None:
    aug = DiffAugment("color,translation,cutout")
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    aug.eval()
    assert aug(x) is x
    with pytest.raises(ValueError, match="policy=\\[translation,flip\\]: expected a list of .*unknown: \\['flip'\\]"):
        DiffAugment("translation,flip")


def test_translation_shifts_whole_pixels_and_cutout_zeros_a_square() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1  # no zeros, so the filled pixels are visible
    shifted = translation(x, ratio=0.25, generator=torch.Generator().manual_seed(3))
    kept = shifted[shifted != 0]
    assert set(kept.tolist()) <= set(x.flatten().tolist()) and kept.numel() >= 36  # at most 2 rows/cols lost
    holed = cutout(x.expand(16, 1, 8, 8), ratio=0.5, generator=torch.Generator().manual_seed(0))
    zeros = (holed == 0).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() > 0  # a 4x4 square, clipped at the border


LOSS = {name: {"_target_": f"dcgan.objective.losses.{cls}"} for name, cls in
        {"bce": "BCE", "hinge": "Hinge", "lsgan": "LSGAN", "wasserstein": "Wasserstein"}.items()}  # fmt: skip
GP = {"gp": {"_target_": "dcgan.objective.penalties.GradientPenalty", "weight": 10.0}}


def gan(**kwargs) -> DCGAN:
    torch.manual_seed(0)
    return DCGAN(
        generator={"_target_": "dcgan.nets.Generator", "nz": 16, "ngf": 8, "image_size": 16, "channels": 1},
        discriminator={
            "_target_": "dcgan.nets.Discriminator",
            "ndf": 8,
            "image_size": 16,
            "channels": 1,
            "norm": kwargs.pop("norm", "batch"),
            "spectral_norm": kwargs.pop("spectral_norm", False),
        },
        optim={"_target_": "torch.optim.Adam", "_partial_": True},
        num_fixed_samples=4,
        **kwargs,
    )


class Metrics(L.Callback):
    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})


R1_LAZY = {"r1": {"_target_": "dcgan.objective.penalties.R1", "weight": 1.0, "interval": 2}}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": LOSS["hinge"], "spectral_norm": True},
        {"loss": LOSS["lsgan"]},
        {"loss": LOSS["wasserstein"], "penalty": GP, "norm": "none",
         "schedule": {"_target_": "dcgan.objective.Alternating", "n_critic": 5}},
        {"loss": LOSS["bce"], "penalty": R1_LAZY, "augment": {"_target_": "dcgan.objective.DiffAugment",
                                                              "policy": ["translation", "cutout"]}},
    ],
)  # fmt: skip
def test_each_variant_trains(kwargs: dict) -> None:
    module = gan(**dict(kwargs))
    images = torch.randint(0, 256, (128, 1, 16, 16), dtype=torch.uint8)
    metrics = Metrics()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=12, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[metrics],
    )  # fmt: skip
    before = [p.detach().clone() for p in module.generator.parameters()]
    trainer.fit(module, datamodule=TensorDataModule(images, batch_size=32))
    assert all(math.isfinite(v) for m in metrics.seen for v in m.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, module.generator.parameters(), strict=True))
    keys = set().union(*metrics.seen)
    for name in kwargs.get("penalty", {}):
        assert f"loss/{name}" in keys


def test_a_per_image_penalty_with_a_batch_mixing_d_warns() -> None:
    with pytest.warns(UserWarning, match="Penalty gp is per image, but D .* mixes the images of a batch"):
        gan(loss=LOSS["wasserstein"], penalty=GP)


def test_lazy_penalties_run_on_their_interval_and_are_scaled_by_it() -> None:
    r1 = penalties.R1(weight=2.0, interval=4)
    assert [r1.due(step) for step in range(6)] == [True, False, False, False, True, False]
    assert r1.coefficient * r1.interval == 4.0  # gamma / 2 * interval
    assert not penalties.R1(weight=0.0).due(0)  # weight 0: off


def test_bad_variant_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"loss=Identity: expected the GANLoss interface"):
        gan(loss={"_target_": "torch.nn.Identity"})
    with pytest.raises(ValueError, match="penalty.r1.interval=0: expected an integer >= 1"):
        gan(penalty={"r1": {"_target_": "dcgan.objective.penalties.R1", "interval": 0}})
    with pytest.raises(ValueError, match="schedule.n_critic=0: expected an integer >= 1"):
        gan(schedule={"_target_": "dcgan.objective.Alternating", "n_critic": 0})
    with pytest.raises(ValueError, match="penalty=dcgan.objective.penalties.GradientPenalty: expected a dict"):
        gan(penalty=GP["gp"])


def test_wgan_gp_experiment_sets_the_papers_recipe(make_cfg) -> None:
    m = make_cfg(["experiment=wgan_gp"]).model
    assert (m.loss._target_, m.penalty.gp.weight, m.schedule.n_critic) == ("dcgan.objective.losses.Wasserstein", 10, 5)
    assert m.discriminator.norm == "none"
    assert (m.optim.lr, list(m.optim.betas)) == (1e-4, [0.0, 0.9])


def test_augment_policy_from_the_command_line(make_cfg) -> None:
    from hydra.utils import instantiate

    model = instantiate(make_cfg(["model.augment.policy=[translation,cutout]"]).model, _recursive_=False)
    assert model.objective.augment.policy == ["translation", "cutout"]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_fast_dev_runs(make_cfg, experiment: str, mnist_root, tmp_path) -> None:
    from tests.formats import write_celeba

    tiny = TINY
    if "inner" in make_cfg([f"experiment={experiment}"]).model.discriminator:  # a wrapper D: the width is its inner's
        tiny = [o.replace("discriminator.", "discriminator.inner.") for o in TINY]
    cfg = make_cfg([*tiny, f"experiment={experiment}", "debug=fdr"])
    if "MNIST" in cfg.data._target_:  # the tiny real-format copies stand in for the real files
        cfg.data.data_dir = str(mnist_root)
    elif "CelebA" in cfg.data._target_:
        cfg.data.data_dir = str(write_celeba(tmp_path / "celeba_root", n=40))
    train(cfg)


class RelativisticAverage(losses.GANLoss):
    """A user's own loss, defined outside the package: RaGAN with BCE (Jolicoeur-Martineau 2018), simplified to
    D's fake outputs on G's side (the interface gives G's loss the fake scores only)."""

    logits = True

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = margin

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(real)
        real_vs_fake = real - fake.mean() - self.margin
        return torch.nn.functional.binary_cross_entropy_with_logits(real_vs_fake, ones)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(fake - fake.mean().detach(), torch.ones_like(fake))


def test_a_loss_class_from_outside_the_package_trains_and_is_rebuilt_from_the_checkpoint(make_cfg, tmp_path) -> None:
    plug = ["model.loss._target_=tests.test_variants.RelativisticAverage", "+model.loss.margin=0.25"]
    cfg = make_cfg([*TINY, *plug, "trainer.max_steps=8", "~callbacks.quality", "~callbacks.best"])
    metrics = train(cfg)
    assert math.isfinite(metrics["loss/d"]) and math.isfinite(metrics["loss/g"])
    model = DCGAN.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert isinstance(model.objective.loss, RelativisticAverage) and model.objective.loss.margin == 0.25


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model" / "loss").glob("*.yaml")))
def test_each_shipped_loss_is_a_config_option(make_cfg, name: str) -> None:
    from hydra.utils import instantiate

    model = instantiate(make_cfg([f"model/loss={name}"]).model, _recursive_=False)
    assert isinstance(model.objective.loss, losses.GANLoss) and type(model.objective.loss).__name__.lower() == name


class FlipAugment(nn.Module):
    """A user's own augmentation: flips every image left-right (the same for real and fake)."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.flip(-1) if self.training else x


class CopyEMA:
    """A user's own average: follows G exactly (decay 0), counting its updates."""

    def update(self, average: nn.Module, generator: nn.Module, g_steps: int) -> None:
        average.load_state_dict(generator.state_dict())


def test_augment_and_ema_classes_from_outside_the_package_plug_in(make_cfg, tmp_path) -> None:
    plug = ["~model.augment", "+model.augment._target_=tests.test_variants.FlipAugment"]
    plug += ["+model.ema._target_=tests.test_variants.CopyEMA"]
    train(make_cfg([*TINY, *plug, "trainer.max_steps=8", "~callbacks.quality", "~callbacks.best"]))
    model = DCGAN.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert isinstance(model.objective.augment, FlipAugment) and isinstance(model.ema, CopyEMA)
    for avg, g in zip(model.generator_ema.parameters(), model.generator.parameters(), strict=True):
        torch.testing.assert_close(avg, g)  # CopyEMA's rule was what the module applied


def test_shipped_augment_and_ema_options(make_cfg) -> None:
    from hydra.utils import instantiate

    from dcgan.objective.ema import EMA

    model = instantiate(make_cfg(["model/augment=diffaugment", "model/ema=average"]).model, _recursive_=False)
    assert model.objective.augment.policy == ["color", "translation", "cutout"]
    assert isinstance(model.ema, EMA) and model.ema.decay == 0.999 and model.generator_ema is not None
    plain = instantiate(make_cfg([]).model, _recursive_=False)
    assert plain.objective.augment.policy == [] and plain.ema is None and plain.generator_ema is None
