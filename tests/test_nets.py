import pytest
import torch
from torch import nn

from dcgan.nets import Discriminator, Generator, num_resolution_doublings


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(image_size: int, channels: int) -> None:
    torch.manual_seed(0)
    g = Generator(nz=100, ngf=8, image_size=image_size, channels=channels)
    d = Discriminator(ndf=8, image_size=image_size, channels=channels)
    images = g(torch.randn(3, 100))
    assert images.shape == (3, channels, image_size, image_size)
    assert images.min() >= -1 and images.max() <= 1  # Tanh output
    assert g(torch.randn(3, 100, 1, 1)).shape == images.shape  # both z layouts
    assert d(images).shape == (3,)


def test_parameter_counts_match_the_paper_architecture_at_64px_rgb() -> None:
    g = Generator(nz=100, ngf=64, image_size=64, channels=3)
    d = Discriminator(ndf=64, image_size=64, channels=3)
    assert sum(p.numel() for p in g.parameters()) == 3_576_704
    assert sum(p.numel() for p in d.parameters()) == 2_765_568


def test_depth_follows_image_size() -> None:
    assert [num_resolution_doublings(s) for s in (16, 32, 64, 128)] == [2, 3, 4, 5]
    g = Generator(ngf=8, image_size=128, channels=3)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 6  # 1 -> 4 -> ... -> 128


def test_discriminator_has_no_batchnorm_on_its_first_block_and_no_sigmoid() -> None:
    d = Discriminator(ndf=8, image_size=32, channels=1)
    layers = list(d.net)
    assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)
    assert layers[1].negative_slope == 0.2
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    logits = d(torch.randn(64, 1, 32, 32) * 10)
    assert (logits < 0).any() or (logits > 1).any()  # raw logits, not probabilities


def test_paper_initialisation() -> None:
    torch.manual_seed(0)
    g = Generator(ngf=64, image_size=64, channels=3)
    conv_w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    bn_w = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert conv_w.mean().abs() < 1e-3 and abs(conv_w.std().item() - 0.02) < 1e-3
    assert abs(bn_w.mean().item() - 1.0) < 5e-3 and abs(bn_w.std().item() - 0.02) < 5e-3
    assert torch.all(bn_b == 0)


@pytest.mark.parametrize("bad", [8, 48, 100])
def test_unsupported_image_size_is_refused_with_the_fix(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"image_size={bad}.*power of two >= 16"):
        Generator(image_size=bad)


def test_a_channel_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="channels=0: expected an integer >= 1"):
        Discriminator(channels=0)
    assert Discriminator(ndf=8, image_size=16, channels=6)(torch.randn(2, 6, 16, 16)).shape == (2,)  # packed input
