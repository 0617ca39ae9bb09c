import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from dcgan.data import DataError, DigitsDataModule, MNISTDataModule, to_unit_range
from dcgan.data.loader import ShardedPermutation, TensorBatchLoader
from tests.formats import write_idx_images


def first_batches(dm, n: int = 3) -> list[torch.Tensor]:
    dm.prepare_data()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


def test_digits_are_embedded_upsampled_and_scaled() -> None:
    dm = DigitsDataModule(image_size=32, channels=1, batch_size=64, seed=0)
    batch = to_unit_range(first_batches(dm, 1)[0])
    assert len(dm.images) == 1797
    assert batch.shape == (64, 1, 32, 32) and batch.dtype == torch.float32
    assert batch.min() == -1 and batch.max() == 1


def test_batches_are_label_free_uint8_until_transfer() -> None:
    batch = first_batches(DigitsDataModule(image_size=16, channels=1, batch_size=8), 1)[0]
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8


def test_order_is_deterministic_under_a_seed_and_changes_with_it() -> None:
    a = first_batches(DigitsDataModule(image_size=16, channels=1, batch_size=16, seed=1))
    b = first_batches(DigitsDataModule(image_size=16, channels=1, batch_size=16, seed=1))
    c = first_batches(DigitsDataModule(image_size=16, channels=1, batch_size=16, seed=2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_gray_data_in_an_rgb_run_is_replicated_to_three_channels() -> None:
    batch = first_batches(DigitsDataModule(image_size=16, channels=3, batch_size=4), 1)[0]
    assert batch.shape == (4, 3, 16, 16)
    assert torch.equal(batch[:, 0], batch[:, 2])


def test_mnist_reads_the_torchvision_layout_and_pads_to_32(mnist_root: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_root), batch_size=32)
    batch = first_batches(dm, 1)[0]
    assert len(dm.images) == 256 and batch.shape == (32, 1, 32, 32)
    assert torch.all(dm.images[:, :, :2] == 0) and torch.all(dm.images[:, :, :, -2:] == 0)  # black border
    packed = (mnist_root / "MNIST/raw/train-images-idx3-ubyte.gz").read_bytes()
    source = np.frombuffer(gzip.decompress(packed)[16:], np.uint8)
    assert torch.equal(dm.images[:, 0, 2:30, 2:30].flatten(), torch.from_numpy(source.copy()))  # pixels exact


def test_mnist_resize_mode_and_other_sizes(mnist_root: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_root), image_size=64, fit="resize", batch_size=8)
    assert first_batches(dm, 1)[0].shape == (8, 1, 64, 64)


def test_mnist_reads_unpacked_files_too(tmp_path: Path) -> None:
    write_idx_images(tmp_path / "MNIST/raw/train-images-idx3-ubyte", np.zeros((10, 28, 28)))
    dm = MNISTDataModule(data_dir=str(tmp_path), batch_size=5)
    assert first_batches(dm, 1)[0].shape == (5, 1, 32, 32)


def test_missing_mnist_names_files_folder_and_the_fix(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"), batch_size=8)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "data.download=true" in message and "DCGAN_DATA_DIR" in message


def test_failed_download_is_reported_with_the_manual_route(tmp_path: Path, monkeypatch) -> None:
    def offline(self) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(MNISTDataModule, "_torchvision_download", offline)
    dm = MNISTDataModule(data_dir=str(tmp_path), batch_size=8, download=True)
    with pytest.raises(DataError, match="download failed.*network unreachable"):
        dm.prepare_data()


def test_truncated_mnist_file_is_refused_before_training(mnist_root: Path) -> None:
    path = mnist_root / "MNIST/raw/train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-100]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        first_batches(MNISTDataModule(data_dir=str(mnist_root), batch_size=8), 1)
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable IDX file"):
        first_batches(MNISTDataModule(data_dir=str(mnist_root), batch_size=8), 1)


def test_bad_mnist_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^fit='crop': expected pad or resize"):
        MNISTDataModule(data_dir=str(tmp_path), fit="crop")
    with pytest.raises(ValueError, match="^split='val': expected one of"):
        MNISTDataModule(data_dir=str(tmp_path), split="val")


def test_batch_larger_than_the_data_set_is_refused() -> None:
    dm = DigitsDataModule(image_size=16, channels=1, batch_size=5000)
    dm.setup()
    with pytest.raises(ValueError, match="batch_size=5000.*lower data.batch_size"):
        dm.train_dataloader()


def test_loader_resumes_mid_epoch_with_the_same_remaining_batches() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    full = TensorBatchLoader(images, ShardedPermutation(100, seed=5), batch_size=10)
    list(full)
    expected = list(full)  # the second epoch
    partial = TensorBatchLoader(images, ShardedPermutation(100, seed=5), batch_size=10)
    list(partial)
    it = iter(partial)
    for _ in range(4):
        next(it)
    partial.consumed = 4  # what the DataModule records as batches reach the model
    resumed = TensorBatchLoader(images, ShardedPermutation(100, seed=5), batch_size=10)
    resumed.load_state_dict(partial.state_dict())
    rest = list(resumed)
    assert resumed.epoch == 1
    assert len(rest) == 6 and all(torch.equal(a, b) for a, b in zip(rest, expected[4:], strict=True))
    assert not torch.equal(expected[0], next(iter(TensorBatchLoader(images, ShardedPermutation(100, seed=5), 10))))


def test_loader_resumed_at_an_epoch_end_starts_the_next_epoch() -> None:
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    loader = TensorBatchLoader(images, ShardedPermutation(20, seed=0), batch_size=10)
    loader.load_state_dict({**loader.state_dict(), "epoch": 0, "consumed": 2})
    batches = list(loader)
    assert loader.epoch == 1 and len(batches) == 2
    assert len(list(loader)) == 2 and loader.epoch == 2


def test_ranks_get_disjoint_equal_shards() -> None:
    shards = [ShardedPermutation(101, seed=0, rank=r, world_size=2).indices(epoch=0) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_real_mnist(real_data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(real_data_dir), batch_size=128)
    batch = to_unit_range(first_batches(dm, 1)[0])
    assert dm.images.shape == (60000, 1, 32, 32)
    assert batch.min() == -1 and batch.max() == 1


def test_a_pass_cut_short_still_advances_the_epoch() -> None:
    """limit_train_batches: the next pass must not replay the same shuffled prefix."""
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    loader = TensorBatchLoader(images, ShardedPermutation(100, seed=0), batch_size=10)
    first = next(iter(loader))
    loader.consumed = 1  # the training loop used one batch, then stopped the pass
    second = next(iter(loader))
    assert loader.epoch == 1 and not torch.equal(first, second)


def test_resuming_with_a_different_data_layout_is_refused() -> None:
    images = torch.zeros(100, 1, 1, 1, dtype=torch.uint8)
    saved = TensorBatchLoader(images, ShardedPermutation(100, seed=0), batch_size=10).state_dict()
    other = TensorBatchLoader(images, ShardedPermutation(100, seed=0), batch_size=20)
    with pytest.raises(ValueError, match=r"batch_size=10 \(now 20\).*original data"):
        other.load_state_dict(saved)


def test_seeds_do_not_share_orders_an_epoch_apart() -> None:
    a, b = ShardedPermutation(50, seed=1), ShardedPermutation(50, seed=2)
    assert not torch.equal(a.indices(epoch=1), b.indices(epoch=0))
