"""Every data config from fixtures in the real on-disk formats: batches, errors, caches, training."""

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from dcgan.data import CelebADataModule, CIFAR10DataModule, DataError, ImageFolderDataModule, MNISTDataModule
from dcgan.data.mnist import FashionMNISTDataModule
from dcgan.tasks.train import train
from tests.conftest import TINY
from tests.formats import write_celeba, write_cifar, write_folder, write_idx_images


@pytest.fixture
def fixtures(tmp_path: Path, mnist_root: Path) -> dict[str, list[str]]:
    """Overrides that point each data config at a small fixture."""
    fashion = tmp_path / "fashion"
    write_idx_images(fashion / "FashionMNIST/raw/train-images-idx3-ubyte.gz", np.full((64, 28, 28), 200))
    return {
        "digits": [],
        "mnist": [f"data.data_dir={mnist_root}"],
        "fashion_mnist": [f"data.data_dir={fashion}"],
        "stacked_mnist": [f"data.data_dir={mnist_root}", "data.num_stacks=256", "data.num_test_stacks=64"],
        "cifar10": [f"data.data_dir={write_cifar(tmp_path / 'cifar')}", "data.verify_md5=false"],
        "celeba": [f"data.data_dir={write_celeba(tmp_path / 'celeba_root')}", "data.num_workers=0"],
        "folder": [f"data.data_dir={write_folder(tmp_path / 'photos')}", "data.num_workers=0"],
    }


CHANNELS = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "stacked_mnist": 3, "cifar10": 3, "celeba": 3, "folder": 3}
NAMES = list(CHANNELS)


def batches(dm, n: int = 2) -> list[torch.Tensor]:
    dm.prepare_data()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [dm.on_after_batch_transfer(next(it), 0) for _ in range(n)]


@pytest.mark.parametrize("name", NAMES)
def test_every_data_config_serves_label_free_batches_in_range(make_cfg, fixtures, name: str) -> None:
    cfg = make_cfg([f"data={name}", "data.batch_size=8", *fixtures[name]])
    first = batches(instantiate(cfg.data))
    again = batches(instantiate(cfg.data))
    other_cfg = make_cfg([f"data={name}", "data.batch_size=8", "seed=7", *fixtures[name]])
    other_seed = batches(instantiate(other_cfg.data))
    size = cfg.data.image_size
    for batch in first:
        assert isinstance(batch, torch.Tensor)  # images only, no labels
        assert batch.shape == (8, CHANNELS[name], size, size) and batch.dtype == torch.float32
        assert batch.min() >= -1 and batch.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # same seed, same order
    if name != "fashion_mnist":  # that fixture is one flat gray: every order looks the same
        assert not all(torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_fast_dev_run_of_training_on_every_data_config(make_cfg, fixtures, name: str) -> None:
    metrics = train(make_cfg([*TINY, "debug=fdr", f"data={name}", "data.batch_size=8", *fixtures[name]]))
    assert {"loss/d", "loss/g"} <= set(metrics)


def test_real_fashion_mnist(real_data_dir: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(real_data_dir), batch_size=128)
    batch = batches(dm, 1)[0]
    assert dm.images.shape == (60000, 1, 32, 32) and batch.min() == -1 and batch.max() == 1


# --- CIFAR-10 -------------------------------------------------------------------------------------


def test_cifar_pixels_are_decoded_exactly(tmp_path: Path) -> None:
    root = write_cifar(tmp_path)
    dm = CIFAR10DataModule(data_dir=str(root), verify_md5=False, batch_size=8)
    dm.prepare_data()
    dm.setup()
    import pickle

    first = pickle.loads((root / "cifar-10-batches-py/data_batch_1").read_bytes(), encoding="bytes")[b"data"][0]
    assert dm.images.shape == (100, 3, 32, 32)
    assert torch.equal(dm.images[0].flatten(), torch.from_numpy(first))


def test_cifar_gray_run_uses_luma(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(write_cifar(tmp_path)), channels=1, verify_md5=False, batch_size=8)
    assert batches(dm, 1)[0].shape == (8, 1, 32, 32)


def test_missing_cifar_names_files_folder_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        CIFAR10DataModule(data_dir=str(tmp_path)).prepare_data()
    msg = str(err.value)
    assert "data_batch_1" in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert "cifar-10-python.tar.gz" in msg and "data.download=true" in msg


def test_cifar_md5_mismatch_is_refused(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(write_cifar(tmp_path)), batch_size=8)
    with pytest.raises(DataError, match=r"data_batch_1 has md5 .* expected c99cafc1.*truncated or altered"):
        dm.prepare_data()
        dm.setup()


def test_cifar_corrupt_pickle_is_refused(tmp_path: Path) -> None:
    root = write_cifar(tmp_path)
    (root / "cifar-10-batches-py/data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_3 is not a valid CIFAR-10 python batch"):
        batches(CIFAR10DataModule(data_dir=str(root), verify_md5=False, batch_size=8))


def test_cifar_archive_is_extracted_and_a_truncated_one_is_refused(tmp_path: Path) -> None:
    import tarfile

    src = write_cifar(tmp_path / "src")
    archive = tmp_path / "dst" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert batches(CIFAR10DataModule(data_dir=str(archive.parent), verify_md5=False, batch_size=8), 1)
    broken = tmp_path / "broken" / "cifar-10-python.tar.gz"
    broken.parent.mkdir()
    broken.write_bytes(archive.read_bytes()[:500])
    with pytest.raises(DataError, match="could not be extracted.*truncated or corrupt"):
        CIFAR10DataModule(data_dir=str(broken.parent)).prepare_data()


# --- CelebA ---------------------------------------------------------------------------------------


def test_celeba_protocol_crop_178_then_resize(tmp_path: Path) -> None:
    root = write_celeba(tmp_path)
    dm = CelebADataModule(data_dir=str(root), num_workers=0, batch_size=4)
    dm.setup()
    expected = Image.open(root / "celeba/img_align_celeba/000001.jpg").convert("RGB").crop((0, 20, 178, 198))
    expected = np.asarray(expected.resize((64, 64), Image.Resampling.BILINEAR))
    got = dm.dataset[0][0].permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(("split", "count"), [("all", 30), ("train", 20), ("valid", 5), ("test", 5)])
def test_celeba_splits_follow_the_partition_file(tmp_path: Path, split: str, count: int) -> None:
    dm = CelebADataModule(data_dir=str(write_celeba(tmp_path)), split=split, num_workers=0)
    assert len(dm.files) == count


def test_missing_celeba_gives_the_manual_zip_route(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        CelebADataModule(data_dir=str(tmp_path)).prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "celeba" / "img_align_celeba") in msg
    assert "img_align_celeba.zip" in msg and "Google Drive" in msg


def test_celeba_zip_is_extracted_and_a_corrupt_one_is_refused(tmp_path: Path) -> None:
    src = write_celeba(tmp_path / "src") / "celeba"
    base = tmp_path / "dst" / "celeba"
    base.mkdir(parents=True)
    with zipfile.ZipFile(base / "img_align_celeba.zip", "w") as zf:
        for p in (src / "img_align_celeba").iterdir():
            zf.write(p, f"img_align_celeba/{p.name}")
    dm = CelebADataModule(data_dir=str(base.parent), num_workers=0, batch_size=4)
    assert len(dm.files) == 30
    (tmp_path / "bad" / "celeba").mkdir(parents=True)
    (tmp_path / "bad" / "celeba" / "img_align_celeba.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="could not be extracted.*truncated or corrupt"):
        CelebADataModule(data_dir=str(tmp_path / "bad")).prepare_data()


def test_celeba_split_without_partition_file_is_refused(tmp_path: Path) -> None:
    root = write_celeba(tmp_path)
    (root / "celeba/list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="data.split=train needs .*list_eval_partition.txt"):
        CelebADataModule(data_dir=str(root), split="train").prepare_data()


# --- image folders --------------------------------------------------------------------------------


def test_folder_finds_every_image_recursively_and_ignores_other_files(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(write_folder(tmp_path)), num_workers=0)
    assert len(dm.files) == 18
    assert {p.suffix.lower() for p in dm.files} == {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def test_folder_converts_gray_and_rgba_to_rgb_and_rgb_to_gray(tmp_path: Path) -> None:
    root = write_folder(tmp_path)
    rgb = ImageFolderDataModule(data_dir=str(root), num_workers=0, image_size=32)
    gray = ImageFolderDataModule(data_dir=str(root), num_workers=0, image_size=32, channels=1)
    rgb.setup()
    gray.setup()
    for i in range(len(rgb.files)):
        assert rgb.dataset[i][0].shape == (3, 32, 32) and gray.dataset[i][0].shape == (1, 32, 32)


@pytest.mark.parametrize("make", ["missing", "empty", "only_text"])
def test_folder_without_images_is_refused(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "photos"
    if make != "missing":
        folder.mkdir()
    if make == "only_text":
        (folder / "readme.txt").write_text("hi")
    expected = "is not a directory" if make == "missing" else "no images in .*searched recursively"
    with pytest.raises(DataError, match=expected):
        ImageFolderDataModule(data_dir=str(folder)).prepare_data()


@pytest.mark.parametrize("cache", [False, True])
def test_undecodable_images_are_listed_before_training(tmp_path: Path, cache: bool) -> None:
    root = write_folder(tmp_path / "photos")
    (root / "a" / "broken.jpg").write_bytes(b"this is not a jpeg")
    dm = ImageFolderDataModule(
        data_dir=str(root), num_workers=0, cache=cache, cache_dir=str(tmp_path / "c"), bad_images="fail"
    )
    with pytest.raises(DataError, match=r"1 of 19 image files cannot be read:\n.*broken.jpg"):
        dm.prepare_data()
        dm.setup()
    assert not list((tmp_path / "c").glob("*.npy")) if cache else True  # no half-written cache
    skipping = ImageFolderDataModule(data_dir=str(root), num_workers=0, cache=cache, cache_dir=str(tmp_path / "c"))
    skipping.prepare_data()
    skipping.setup()  # under the default, skip, one file of 19 is passed over, named in the log
    assert list(skipping.bad.seen) == [skipping.files.index((root / "a" / "broken.jpg").resolve())]


def test_folder_cache_holds_the_same_pixels_as_decoding(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos")
    plain = ImageFolderDataModule(data_dir=str(root), num_workers=0, image_size=16)
    cached = ImageFolderDataModule(
        data_dir=str(root), num_workers=0, image_size=16, cache=True, cache_dir=str(tmp_path)
    )
    plain.setup()
    cached.prepare_data()
    cached.setup()
    assert isinstance(cached.images, torch.Tensor) and cached.images.shape == (18, 3, 16, 16)
    assert all(torch.equal(cached.images[i], plain.dataset[i][0]) for i in range(18))


# --- the decode cache -----------------------------------------------------------------------------


def test_cache_is_reused_while_the_source_is_unchanged_and_rebuilt_when_it_changes(
    tmp_path: Path, mnist_root: Path, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    first = MNISTDataModule(data_dir=str(mnist_root), cache_dir=str(cache), batch_size=8)
    first.prepare_data()
    (built,) = cache.glob("*.npy")

    def must_not_decode(self):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(MNISTDataModule, "load_images", must_not_decode)
        again = MNISTDataModule(data_dir=str(mnist_root), cache_dir=str(cache), batch_size=8)
        again.prepare_data()
        again.setup()
    assert torch.equal(again.images, torch.from_numpy(np.load(built)))

    write_idx_images(mnist_root / "MNIST/raw/train-images-idx3-ubyte.gz", np.full((256, 28, 28), 7))
    changed = MNISTDataModule(data_dir=str(mnist_root), cache_dir=str(cache), batch_size=8)
    changed.prepare_data()
    changed.setup()
    assert len(list(cache.glob("*.npy"))) == 2
    assert torch.all(changed.images[:, :, 2:30, 2:30] == 7)  # the new pixels, not the cached ones

    resized = MNISTDataModule(data_dir=str(mnist_root), cache_dir=str(cache), batch_size=8, image_size=64)
    resized.prepare_data()
    assert len(list(cache.glob("*.npy"))) == 3  # decode settings are part of the key


def test_gzip_fixture_is_real_idx(mnist_root: Path) -> None:
    raw = gzip.decompress((mnist_root / "MNIST/raw/train-images-idx3-ubyte.gz").read_bytes())
    assert int.from_bytes(raw[:4], "big") == 2051 and len(raw) == 16 + 256 * 28 * 28


def test_png_fixture_is_a_real_png(tmp_path: Path) -> None:
    root = write_folder(tmp_path)
    png = next(root.rglob("*.png"))
    assert Image.open(io.BytesIO(png.read_bytes())).format == "PNG"
