"""data=stacked_mnist: seeded stacks of three MNIST digits as R, G, B, labelled with their mode; small IDX files."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from dcgan.data import DataError, StackedMNISTDataModule, mode_of
from dcgan.errors import ArgumentError
from dcgan.tasks.train import train
from tests.conftest import TINY
from tests.formats import write_idx_images, write_idx_labels


def stacked(root: Path, **kwargs) -> StackedMNISTDataModule:
    """Set up on the ``mnist_root`` fixture: 256 train and 128 test digits of random pixels (each one distinct)."""
    dm = StackedMNISTDataModule(data_dir=str(root), **{"num_stacks": 1000, "batch_size": 16, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def batches(dm: StackedMNISTDataModule, n: int = 3) -> list:
    it = iter(dm.train_dataloader())
    return [dm.on_after_batch_transfer(next(it), 0) for _ in range(n)]


def digit_of_each_channel(images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3): the index in ``digits`` (N, 1, H, W) each channel is a copy of."""
    flat = digits.flatten(1).long()  # (N, H*W)
    matches = (images.flatten(2).long()[:, :, None, :] == flat[None, None]).all(-1)  # (B, 3, N)
    assert torch.all(matches.sum(-1) == 1), "every channel is exactly one source digit"
    return matches.float().argmax(-1)


def test_same_seed_draws_the_same_stacks_and_order_another_seed_others(mnist_root: Path) -> None:
    a, again, other = stacked(mnist_root, seed=1), stacked(mnist_root, seed=1), stacked(mnist_root, seed=2)
    assert torch.equal(a.images[:], again.images[:])
    assert all(torch.equal(x, y) for x, y in zip(batches(a), batches(again), strict=True))
    assert not torch.equal(a.images[:], other.images[:])
    pinned = stacked(mnist_root, seed=2, stack_seed=1)  # other seeds on one fixed set of stacks: another order only
    assert torch.equal(pinned.images[:], a.images[:])
    assert not torch.equal(batches(pinned, 1)[0], batches(a, 1)[0])


def test_batches_are_rgb_stacks_of_padded_digits_labelled_with_their_mode(mnist_root: Path) -> None:
    dm = stacked(mnist_root)
    dm.with_labels = True  # what a conditional model asks for
    digits, digit_labels = dm.digits("train")
    assert digits.shape == (256, 1, 32, 32) and digits.dtype == torch.uint8 and digit_labels.dtype == torch.int64
    assert torch.all(digits[:, :, :2] == 0) and torch.all(digits[:, :, :, -2:] == 0)  # padded 28 -> 32 in black
    assert dm.num_images() == 1000 and dm.images.shape == (1000, 3, 32, 32) and dm.num_classes == 1000
    for images, labels in batches(dm):
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 999
        uint8 = ((images + 1) * 127.5).round().to(torch.uint8)
        channels = digit_of_each_channel(uint8, digits)  # (16, 3): the R, G and B digits
        assert torch.equal(labels, mode_of(digit_labels[channels]))
    assert torch.equal(dm.load_labels(), mode_of(digit_labels[dm.stacks("train")]))


def test_stacks_draw_every_digit_uniformly_with_replacement(mnist_root: Path) -> None:
    stacks = stacked(mnist_root, num_stacks=20_000).stacks("train")  # (20000, 3) indices into 256 digits
    assert stacks.shape == (20_000, 3) and stacks.min() == 0 and stacks.max() == 255
    counts = torch.bincount(stacks.flatten(), minlength=256).double()
    assert counts.std() / counts.mean() < 0.1  # uniform: 234 draws each, Poisson spread about 0.065
    assert (stacks[:, 0] == stacks[:, 1]).any()  # with replacement: a digit can fill two channels


def test_mode_of_reads_r_g_b_as_hundreds_tens_units() -> None:
    assert mode_of(torch.tensor([[4, 7, 3], [0, 0, 0], [9, 9, 9]])).tolist() == [473, 0, 999]
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        mode_of(torch.tensor([4, 7, 3]))


def test_train_plus_test_source_stacks_both_splits_digits(mnist_root: Path) -> None:
    dm = stacked(mnist_root, source="train+test", num_stacks=5000)
    digits, labels = dm.digits("train")
    train_digits, _ = stacked(mnist_root).digits("train")
    test_digits, test_labels = dm.digits("test")
    assert len(digits) == len(labels) == 256 + 128 and dm.stacks("train").max() > 255  # test digits are drawn too
    assert torch.equal(digits, torch.cat([train_digits, test_digits]))
    assert len(test_digits) == len(test_labels) == 128
    assert dm.identity() != stacked(mnist_root, num_stacks=5000).identity()  # metric caches tell them apart


def test_unseen_digits_are_the_mnist_split_a_classifier_of_a_split_never_saw(mnist_root: Path) -> None:
    dm = stacked(mnist_root)
    train, test = dm.digits("train"), dm.digits("test")
    unseen_by_train, unseen_by_test = dm.unseen_digits("train"), dm.unseen_digits("test")
    assert torch.equal(unseen_by_train[0], test[0]) and torch.equal(unseen_by_train[1], test[1])
    assert torch.equal(unseen_by_test[0], train[0]) and torch.equal(unseen_by_test[1], train[1])
    both = stacked(mnist_root, source="train+test")
    assert both.unseen_digits("train") is None  # its training digits are all of MNIST
    assert torch.equal(both.unseen_digits("test")[0], train[0])  # MNIST's training digits, not the 70k mix


def test_test_split_is_fixed_stacks_of_the_test_digits_for_every_seed(mnist_root: Path) -> None:
    test = stacked(mnist_root, seed=1, num_test_stacks=300).for_split("test")
    other = stacked(mnist_root, seed=2, num_test_stacks=300).for_split("test")
    assert test.current_split == "test" and test.num_images() == 300
    assert torch.equal(test.images[:], other.images[:]) and test.identity() == other.identity()
    test_digits, test_labels = test.digits("test")
    channels = digit_of_each_channel(test.images_at(torch.arange(50)), test_digits)
    assert torch.equal(test.load_labels()[:50], mode_of(test_labels[channels]))


@pytest.mark.parametrize("consumed", [3, 10])  # mid-pass, and right at the end of the 10-batch pass
def test_a_resumed_loader_continues_the_same_order(mnist_root: Path, consumed: int) -> None:
    loader = stacked(mnist_root, seed=3, num_stacks=160).train_dataloader()
    it = iter(loader)
    for _ in range(consumed):
        next(it)
    loader.consumed = consumed  # what on_after_batch_transfer counts in a training loop
    state = loader.state_dict()
    straight = [*it, *loader]  # the rest of this pass, then the next one

    # a fresh process: a new DataModule from the same config, its loader given the saved position
    resumed = stacked(mnist_root, seed=3, num_stacks=160).train_dataloader()
    resumed.load_state_dict(state)
    again = [*resumed, *resumed]
    assert len(straight) >= 10 and all(torch.equal(a, b) for a, b in zip(straight[:10], again[:10], strict=True))


@pytest.mark.parametrize(
    ("argument", "value", "fix"),
    [
        ("source", "val", "Fix: source=train"),
        ("num_stacks", 0, "Fix: num_stacks=128000"),
        ("num_stacks", 1.5, "Fix: num_stacks=128000"),
        ("num_test_stacks", 0, "Fix: num_test_stacks=26000"),
        ("stack_seed", -1, "Fix: stack_seed=0"),
        ("channels", 1, "Fix: channels=3"),
        ("split", "valid", "Fix: split=test"),
        ("fit", "crop", "Fix: fit=pad"),
    ],
)
def test_bad_arguments_name_the_argument_the_value_and_the_fix(argument: str, value, fix: str) -> None:
    with pytest.raises(ArgumentError) as err:
        StackedMNISTDataModule(data_dir="unused", **{argument: value})
    message = str(err.value)
    assert message.startswith(f"{argument}=") and str(value) in message and "expected" in message and fix in message


def test_missing_files_give_mnists_message(tmp_path: Path, mnist_root: Path) -> None:
    with pytest.raises(DataError) as err:
        StackedMNISTDataModule(data_dir=str(tmp_path / "nowhere")).prepare_data()
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "data.download=true" in message and "DCGAN_DATA_DIR" in message
    (mnist_root / "MNIST/raw/t10k-images-idx3-ubyte.gz").unlink()  # train+test needs the test digits too
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        StackedMNISTDataModule(data_dir=str(mnist_root), source="train+test").prepare_data()


def test_labels_file_that_disagrees_with_the_images_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte.gz", np.zeros((20, 28, 28)))
    write_idx_labels(raw / "train-labels-idx1-ubyte.gz", np.zeros(19))
    dm = stacked(tmp_path, num_stacks=10, batch_size=2)
    with pytest.raises(DataError, match="19 digit labels for 20 digits"):
        dm.load_labels()


def test_data_stacked_mnist_composes_with_the_protocol_defaults(make_cfg, mnist_root: Path) -> None:
    cfg = make_cfg(["data=stacked_mnist", f"data.data_dir={mnist_root}"])
    assert cfg.data._target_ == "dcgan.data.StackedMNISTDataModule"
    assert (cfg.data.image_size, cfg.data.channels, cfg.data.batch_size) == (32, 3, 64)
    assert (cfg.data.num_stacks, cfg.data.source, cfg.data.eval_split) == (128_000, "train", "test")
    assert cfg.data.seed == cfg.data.stack_seed == cfg.seed
    assert cfg.model.generator.channels == 3 and cfg.model.discriminator.channels == 3
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_images() == 128_000 and dm.stacks("train").max() < 256


@pytest.mark.parametrize("conditional", [False, True])
def test_training_runs_on_stacked_mnist(make_cfg, mnist_root: Path, conditional: bool) -> None:
    overrides = [*TINY, "data=stacked_mnist", f"data.data_dir={mnist_root}", "data.num_stacks=256"]
    overrides += ["data.batch_size=16", "trainer.max_steps=6", "~callbacks.quality", "~callbacks.best"]
    if conditional:  # G and D conditioned on the 1,000 modes
        overrides += ["model.num_classes=1000", "callbacks.samples.every_n_steps=0"]
    metrics = train(make_cfg(overrides))
    assert np.isfinite(metrics["loss/d"]) and np.isfinite(metrics["loss/g"])


def test_real_stacked_mnist(real_data_dir: Path) -> None:
    dm = StackedMNISTDataModule(data_dir=str(real_data_dir), seed=0)  # the protocol: 128,000 stacks of 60,000 digits
    dm.prepare_data()
    dm.setup("fit")
    digits, labels = dm.digits("train")
    assert digits.shape == (60_000, 1, 32, 32) and dm.images.shape == (128_000, 3, 32, 32)
    modes = dm.load_labels()
    assert torch.bincount(modes, minlength=1000).min() > 0  # 128 a mode on average: every mode is there
    assert torch.equal(modes[:100], mode_of(labels[dm.stacks("train")[:100]]))
    assert len(dm.for_split("test").digits("test")[0]) == 10_000 and dm.for_split("test").num_images() == 26_000
    both = StackedMNISTDataModule(data_dir=str(real_data_dir), source="train+test")
    assert len(both.digits("train")[0]) == 70_000
