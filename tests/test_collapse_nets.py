"""D's two mode-collapse fixes as network parts: minibatch stddev (Karras et al. 2018) and PacGAN packing (Lin et al.
2018), each a class in dcgan.nets plus a model/discriminator option, training with no edit to the module."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from dcgan.lightning.module import DCGAN
from dcgan.nets import Discriminator, MinibatchStdDev, Packed
from dcgan.tasks.train import train
from tests.conftest import TINY


def packed_tiny() -> list[str]:
    """TINY for a packed D: the inner D's sizes go under model.discriminator.inner."""
    return [o.replace("discriminator.", "discriminator.inner.") for o in TINY]


def tiny_d(**kwargs) -> functools.partial:
    return functools.partial(Discriminator, ndf=8, image_size=16, **kwargs)


# --- minibatch stddev -------------------------------------------------------------------------------------------


def test_minibatch_stddev_appends_a_per_group_constant_channel_equal_to_the_hand_computed_stddev() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    y = MinibatchStdDev(group_size=4)(x)
    assert y.shape == (8, 4, 5, 5) and torch.equal(y[:, :3], x)
    for j in range(2):  # ProGAN's grouping: group j holds images j, j + 2, j + 4, j + 6
        members = [j, j + 2, j + 4, j + 6]
        group = x[members]  # (4, 3, 5, 5)
        mean = group.sum(dim=0) / 4
        expected = (((group - mean) ** 2).sum(dim=0) / 4 + 1e-8).sqrt().mean()
        extra = y[members, 3]  # (4, 5, 5)
        assert torch.all(extra == extra[0, 0, 0])  # constant over the group's images and positions
        assert torch.allclose(extra[0, 0, 0], expected, atol=1e-6)
    assert y[0, 3, 0, 0] != y[1, 3, 0, 0]  # two groups, two values


def test_minibatch_stddev_takes_a_batch_smaller_than_its_group_as_one_group() -> None:
    x = torch.tensor([[[[0.0]]], [[[2.0]]]])  # (2, 1, 1, 1): stddev 1
    assert torch.allclose(MinibatchStdDev(4)(x)[:, 1].flatten(), torch.ones(2))


def test_minibatch_stddev_refuses_a_batch_that_does_not_split_into_groups() -> None:
    with pytest.raises(
        ValueError, match=r"batch of 6 images does not split into groups of 4.*multiple of 4.*batch_size"
    ):
        MinibatchStdDev(4)(torch.randn(6, 3, 4, 4))
    with pytest.raises(ValueError, match=r"minibatch_std=1: expected an integer >= 2.*Fix: minibatch_std=4"):
        Discriminator(ndf=8, image_size=16, minibatch_std=1)


@pytest.mark.parametrize("image_size", [16, 32, 64])
def test_discriminator_with_minibatch_std_scores_each_image_and_widens_only_its_last_conv(image_size: int) -> None:
    torch.manual_seed(0)
    plain = Discriminator(ndf=8, image_size=image_size, channels=3, norm="none", num_classes=10)
    d = Discriminator(ndf=8, image_size=image_size, channels=3, norm="none", num_classes=10, minibatch_std=4)
    x, labels = torch.randn(8, 3, image_size, image_size), torch.randint(0, 10, (8,))
    scores = d(x, labels)
    assert scores.shape == (8,) and torch.isfinite(scores).all()
    assert d.net[-1].in_channels == plain.net[-1].in_channels + 1  # the stddev channel
    assert d.embed.embedding_dim == plain.embed.embedding_dim  # phi, and so the projection, stay per image
    assert [f.shape for f in d.features(x)] == [f.shape for f in plain.features(x)]
    assert d.mixes_batch and not plain.mixes_batch  # norm=none: only the stddev mixes the batch


def test_minibatch_std_makes_an_images_score_depend_on_its_group() -> None:
    torch.manual_seed(0)
    d = Discriminator(ndf=8, image_size=16, channels=1, norm="none", minibatch_std=4).eval()
    x = torch.randn(4, 1, 16, 16)
    collapsed = x[:1].expand(4, -1, -1, -1)  # a collapsed batch: the same image four times
    with torch.no_grad():
        assert not torch.allclose(d(x)[0], d(collapsed)[0])


# --- packing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("packing", "packs"), [(2, 4), (4, 2)])
def test_packed_d_scores_one_pack_of_images_stacked_along_the_channels(packing: int, packs: int) -> None:
    torch.manual_seed(0)
    d = Packed(tiny_d(norm="none"), packing=packing, channels=3)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        scores = d(x)
        assert scores.shape == (packs,)
        by_hand = d.inner(torch.cat([x[i * packing : (i + 1) * packing].flatten(0, 1)[None] for i in range(packs)]))
        assert torch.allclose(scores, by_hand)  # pack i = images i*m .. i*m + m - 1
        features = d.features(x)
    assert d.inner.net[0].in_channels == packing * 3  # only the first conv widens
    assert d.inner.net[-1].in_channels == Discriminator(ndf=8, image_size=16, norm="none").net[-1].in_channels
    assert [f.shape for f in features] == [(packs, 8, 8, 8), (packs, 16, 4, 4)]
    assert d.mixes_batch and d.num_classes is None


def test_packed_refuses_a_batch_that_does_not_split_into_packs() -> None:
    d = Packed(tiny_d(), packing=2, channels=1)
    with pytest.raises(ValueError, match=r"batch of 7 images does not split into packs of packing=2.*data.batch_size"):
        d(torch.randn(7, 1, 16, 16))


def test_packed_takes_a_built_inner_d_only_when_its_first_conv_takes_the_packs() -> None:
    assert isinstance(Packed(Discriminator(ndf=8, image_size=16, channels=2), packing=2, channels=1).inner, nn.Module)
    with pytest.raises(ValueError, match=r"inner=Discriminator taking 1 channels: .*packing x channels = 2"):
        Packed(Discriminator(ndf=8, image_size=16, channels=1), packing=2, channels=1)
    with pytest.raises(ValueError, match=r"inner.ndf=0: expected an integer >= 1"):  # named under inner
        Packed(functools.partial(Discriminator, ndf=0, image_size=16), packing=2, channels=1)


def test_conditional_packing_projects_the_sum_of_a_packs_class_embeddings() -> None:
    torch.manual_seed(0)
    d = Packed(tiny_d(norm="none", num_classes=10), packing=2, channels=1).eval()
    x, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    with torch.no_grad():
        scores = d(x, labels)
        assert scores.shape == (4,) and torch.isfinite(scores).all() and d.num_classes == 10
        inner, packs, per_pack = d.inner, d.pack(x), labels.reshape(4, 2)
        psi = inner.net(packs).flatten()  # the unconditional part
        # D(x, (y1, y2)) - psi = <V_y1 + V_y2, phi> = (D(x, y1) - psi) + (D(x, y2) - psi)
        each = sum(inner(packs, per_pack[:, i]) - psi for i in range(2))
        assert torch.allclose(scores - psi, each, atol=1e-6)
        phi = inner.net[:-1](packs).sum(dim=(2, 3))  # (4, width)
        by_hand = psi + ((inner.embed.weight[per_pack[:, 0]] + inner.embed.weight[per_pack[:, 1]]) * phi).sum(1)
        assert torch.allclose(scores, by_hand, atol=1e-6)


def test_a_conditional_d_refuses_labels_that_match_no_batch() -> None:
    d = Discriminator(ndf=8, image_size=16, channels=1, num_classes=10)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) for 4 images"):
        d(torch.randn(4, 1, 16, 16), torch.zeros(3, dtype=torch.long))


# --- through the config and the training task -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "extra"),
    [("pacgan", []), ("pacgan", ["model.num_classes=10"]), ("mbstd", ["model.num_classes=10"])],
    ids=["pacgan", "pacgan-conditional", "mbstd-conditional"],
)
def test_each_option_trains_and_its_checkpoint_rebuilds_the_same_d(make_cfg, tmp_path, option: str, extra) -> None:
    tiny = packed_tiny() if option == "pacgan" else TINY
    cfg = make_cfg([*tiny, f"model/discriminator={option}", "trainer.max_steps=6", "~callbacks.quality",
                    "~callbacks.best", *extra])  # fmt: skip
    metrics = train(cfg)
    assert all(math.isfinite(metrics[k]) for k in ("loss/d", "loss/g"))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = DCGAN.load_from_checkpoint(path, weights_only=False)
    saved = torch.load(path, weights_only=False, map_location="cpu")["state_dict"]
    d = model.discriminator
    assert {k for k in saved if k.startswith("discriminator.")} == {f"discriminator.{k}" for k in d.state_dict()}
    for key, value in d.state_dict().items():
        assert torch.equal(value, saved[f"discriminator.{key}"]), key
    if option == "pacgan":
        assert isinstance(d, Packed) and d.packing == 2 and d.inner.net[0].in_channels == 2  # digits: 1 channel
    else:
        assert isinstance(d, Discriminator) and d.mbstd is not None and d.mbstd.group_size == 4
    assert d.mixes_batch and d.num_classes == model.hparams.num_classes


@pytest.mark.parametrize(
    "overrides",
    [["model/discriminator=pacgan", "model.discriminator.inner.norm=none"],
     ["model/discriminator=mbstd", "model.discriminator.norm=none"]],
    ids=["pacgan", "mbstd"],
)  # fmt: skip
def test_a_per_image_penalty_warns_on_either_d_even_without_batchnorm(make_cfg, overrides) -> None:
    cfg = make_cfg(["data.image_size=16", "model/penalty=[r1]", *overrides])
    with pytest.warns(UserWarning, match=r"Penalty r1 is per image, but D \((Packed|Discriminator)\) mixes"):
        instantiate(cfg.model, _recursive_=False)
