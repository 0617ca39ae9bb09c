"""visualize.py: guided backpropagation, top images, nearest neighbours, the copy rate, the index page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from dcgan.analysis import guided, neighbours
from dcgan.data.base import to_unit_range
from dcgan.data.digits import DigitsDataModule
from dcgan.nets import Discriminator
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.train import train
from dcgan.tasks.visualize import visualize
from tests.conftest import TINY


class TinyD(nn.Module):
    """Conv -> ReLU -> Conv -> LeakyReLU, with ``features`` as the project's D has it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.LeakyReLU(0.2)
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
                out.append(x)
        return out


def test_guided_backprop_passes_only_positive_gradients_where_the_input_was_positive() -> None:
    x = torch.randn(64, requires_grad=True)
    upstream = torch.randn(64)
    (grad,) = torch.autograd.grad(guided._GuidedRelu.apply(x, 0.2), x, upstream)
    torch.testing.assert_close(grad, upstream.clamp(min=0) * (x > 0).float())
    assert (grad >= 0).all() and (grad[x.detach() <= 0] == 0).all()


def test_guided_maps_have_the_input_shape_and_leave_d_as_it_was() -> None:
    torch.manual_seed(0)
    d = TinyD().train()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    images = torch.randn(5, 1, 8, 8)
    maps = guided.guided_maps(d, images, channel=2, layer=-1)
    assert maps.shape == images.shape
    assert d.training and all(torch.equal(before[k], v) for k, v in d.state_dict().items())
    plain_x = images.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(d.eval().features(plain_x)[-1][:, 2].sum(), plain_x)
    assert not torch.allclose(plain, maps)  # guided is not the plain gradient


def test_the_top_images_are_the_argmax_of_their_channel() -> None:
    torch.manual_seed(0)
    d = Discriminator(ndf=8, image_size=16, channels=1)
    images = torch.randn(40, 1, 16, 16)
    scores = guided.channel_scores(d, images, layer=-1)
    assert scores.shape == (40, d.net[-1].in_channels)  # the last hidden layer's channels
    for channel in guided.top_channels(scores, 3).tolist():
        top = guided.top_images(scores, channel, 5)
        assert int(top[0]) == int(scores[:, channel].argmax())
        assert torch.equal(top, scores[:, channel].argsort(descending=True)[:5])


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_a_random_d_keeps_the_architecture_and_redraws_the_weights(spectral_norm: bool) -> None:
    def build() -> Discriminator:
        return Discriminator(ndf=8, image_size=16, channels=1, spectral_norm=spectral_norm)

    torch.manual_seed(5)
    trained = build()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # as if trained: far from the initial weights
    images = torch.randn(32, 1, 16, 16)
    state = torch.random.get_rng_state()
    control = guided.random_like(build, images, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "the global generator is left as it was"
    names = [type(m).__name__ for m in control.modules()]  # (parametrized modules get a class per instance)
    assert names == [type(m).__name__ for m in trained.modules()] and not control.training
    first = next(m for m in control.modules() if isinstance(m, nn.Conv2d)).weight
    assert not torch.allclose(first, next(m for m in trained.modules() if isinstance(m, nn.Conv2d)).weight)
    again = next(m for m in guided.random_like(build, images, seed=1).modules() if isinstance(m, nn.Conv2d)).weight
    torch.testing.assert_close(again, first)  # the same seed, the same control
    bn = next(m for m in control.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # measured on the images


def test_a_training_image_given_as_a_sample_is_its_own_nearest_neighbour() -> None:
    train = torch.randn(100, 48)
    distances, indices = neighbours.nearest(train[[7, 42]], train, k=3)
    assert indices[:, 0].tolist() == [7, 42] and torch.all(distances[:, 0] == 0)
    assert (distances[:, 1:] > 0).all()


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    dm = DigitsDataModule(image_size=32, channels=1)
    dm.setup()
    images = to_unit_range(dm.images)
    return images[:1500], images[1500:]


def test_the_copy_rate_reads_one_for_training_images_and_about_zero_for_unseen_and_noise(digits) -> None:
    """The threshold comes from half of the unseen images; the other half is measured against it."""
    train, unseen = (neighbours.flat(x) for x in digits)
    calibrate, held = unseen[:150], unseen[150:]
    noise = neighbours.flat(torch.rand(300, *digits[0].shape[1:]) * 2 - 1)
    assert neighbours.copy_report(train[:300], train, calibrate)["copy_rate"] >= 0.99
    assert neighbours.copy_report(held, train, calibrate)["copy_rate"] <= 0.05
    assert neighbours.copy_report(noise, train, calibrate)["copy_rate"] <= 0.05


def test_visualize_writes_an_index_that_names_every_image(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*TINY, "trainer.max_steps=6", "~callbacks.quality"], run_dir=tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    small = ["features.pool=64", "features.channels=3", "features.images=2", "neighbours.samples=4",
             "neighbours.k=2", "neighbours.heldout=off", "copy_rate.samples=64", "copy_rate.test=40", "walk.pairs=2",
             "walk.steps=4", "data.image_size=16", "device=cpu"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("visualize", overrides=[f"ckpt_path={ckpt}", f"out={tmp_path / 'vis'}", *small])
    summary = visualize(cfg)
    out = tmp_path / "vis"
    page = (out / "index.html").read_text()
    shown = set(re.findall(r'<img src="([^"]+)"', page))
    written = {p.name for p in out.iterdir() if p.suffix in (".png", ".gif")}
    assert shown and shown == written  # every figure written is shown (the GIF too), and none is missing
    for name in shown:
        assert re.search(rf"<b>{re.escape(name)}</b>: \w", page), name  # each with its caption
    assert 0 <= summary["copy_pixels"]["copy_rate"] <= 1
    assert {"d_features_trained.png", "d_features_random.png", "filters_d.png", "neighbours_pixels.png"} <= shown
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        past = compose(
            "visualize", overrides=[f"ckpt_path={ckpt}", f"out={tmp_path / 'v2'}", *small, "features.layer=9"]
        )
    with pytest.raises(ValueError, match=r"features.layer=9: expected an index of D's 2 hidden layers, -2..1"):
        visualize(past)


@pytest.mark.slow
def test_visualize_on_labelled_data_with_a_test_split_reads_the_heldout_space_and_fills_tensorboard(
    make_cfg, tmp_path: Path, mnist_root: Path
) -> None:
    """MNIST's layout (random pixels): neighbours and copy rate in the held-out scorer's feature space too, the
    threshold from the test split, and ``logger=tensorboard`` adding every figure to the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = ["data=mnist", f"data.data_dir={mnist_root}", "data.image_size=16", "data.fit=resize"]
    run = tmp_path / "run"
    train(make_cfg([*TINY, *data, "trainer.max_steps=6", "~callbacks.quality", "~callbacks.best"], run_dir=run))
    small = ["features.pool=64", "features.channels=2", "features.images=2", "neighbours.samples=4", "neighbours.k=2",
             "neighbours.heldout=on", "neighbours.heldout_steps=20", "copy_rate.samples=64", "copy_rate.test=60",
             "walk.pairs=2", "walk.steps=3", "walk.gif=false", "device=cpu", "logger=tensorboard"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "visualize",
            overrides=[f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'vis'}",
                       f"paths.cache_dir={tmp_path / 'cache'}", *data, *small],
        )  # fmt: skip
    summary = visualize(cfg)
    assert summary["global_step"] == 6
    assert "copy_pixels" in summary and "copy_heldout" not in summary  # the scorer trained on the test split
    assert (tmp_path / "vis" / "neighbours_heldout.png").is_file()
    assert "separate test split" not in (tmp_path / "vis" / "index.html").read_text()  # MNIST's own test split
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {f"visualize/{n}" for n in ("d_features_trained", "filters_d", "neighbours_heldout")} <= set(
        events.Tags()["images"]
    )


def test_class_purity_is_one_for_channels_of_one_class_and_lower_for_mixed_ones() -> None:
    from dcgan.tasks.visualize import class_purity

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert class_purity([torch.tensor([0, 1]), torch.tensor([2, 3])], labels) == 1.0
    mixed = [torch.tensor([0, 2, 4]), torch.tensor([0, 1, 2])]  # one of each class; two of class 0
    assert class_purity(mixed, labels) == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_a_logger_without_images_is_refused_in_one_line(tmp_path: Path) -> None:
    from dcgan.tasks.visualize import _check

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("visualize", overrides=["ckpt_path=x.ckpt", f"out={tmp_path}", "logger=csv"])
        _check(compose("visualize", overrides=["ckpt_path=x.ckpt", f"out={tmp_path}", "logger=many"]))  # TB among them
    with pytest.raises(ValueError, match=r"logger=csv: expected tensorboard \(the run's own event files"):
        _check(cfg)


def test_tensorboard_needs_a_checkpoint_inside_a_run_dir(tmp_path: Path) -> None:
    from dcgan.tasks.visualize import Figures, _to_tensorboard

    with pytest.raises(ValueError, match=r"logger=tensorboard: expected a checkpoint inside a run dir"):
        _to_tensorboard(tmp_path / "models" / "last.ckpt", Figures(tmp_path), step=1)
    assert not (tmp_path / "tensorboard").exists()


def test_visualize_on_an_rgb_folder_without_a_test_split(make_cfg, tmp_path: Path) -> None:
    """RGB images, no labels (so no held-out space) and no test split (so a random tenth sets the threshold)."""
    import numpy as np
    from PIL import Image

    from tests.formats import write_folder

    root = write_folder(tmp_path / "photos")
    data = ["data=folder", f"data.data_dir={root}", "data.image_size=16", "data.num_workers=0"]
    tiny = [o for o in TINY if not o.startswith("data.batch_size")]
    run = tmp_path / "run"
    train(make_cfg([*tiny, *data, "data.batch_size=6", "trainer.max_steps=4", "~callbacks.quality",
                    "~callbacks.best"], run_dir=run))  # fmt: skip
    small = ["features.pool=12", "features.channels=2", "features.images=3", "neighbours.samples=3", "neighbours.k=2",
             "copy_rate.samples=10", "copy_rate.test=10", "walk.pairs=2", "walk.steps=3", "walk.gif=false",
             "device=cpu", f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("visualize", overrides=[f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                                              f"out={tmp_path / 'vis'}", *data, *small])  # fmt: skip
    summary = visualize(cfg)
    out = tmp_path / "vis"
    assert 0 <= summary["copy_pixels"]["copy_rate"] <= 1 and "class_purity" not in summary  # no labels
    assert "a random tenth of its training images sets the copy threshold" in (out / "index.html").read_text()
    assert not (out / "neighbours_heldout.png").exists()
    pixels = torch.from_numpy(np.asarray(Image.open(out / "d_features_side_by_side.png").convert("RGB")))
    assert (pixels[..., 0] != pixels[..., 1]).any(), "colour images and colour maps, not gray ones"
