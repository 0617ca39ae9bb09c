"""logger=wandb (offline), logger=mlflow (a local file store) and logger=many each receive the scalars, the
hyper-parameters and the sample grids; read back from what they wrote."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcgan.tasks.train import train
from tests.conftest import TINY

RUN = [*TINY, "trainer.max_steps=8", "trainer.log_every_n_steps=1", "callbacks.samples.every_n_steps=4"]
RUN += ["~callbacks.quality", "~callbacks.best"]


def wandb_records(path: Path) -> Iterator[object]:
    """The protobuf records of an offline ``run-*.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""  # 7: the ":W&B" header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full, or the last piece of a split record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        elif kind in (2, 3):  # first / middle piece
            pending += chunk
        else:
            pos += block - pos % block  # zero padding to the end of the block


def test_wandb_offline_receives_scalars_hyperparameters_and_grids(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(make_cfg([*RUN, "logger=wandb", "logger.wandb.offline=true"]))
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.time() + 60  # wandb's core process writes the file; its exit record ends the run
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(log)) and time.time() < deadline:
        time.sleep(0.5)
    history, config = {}, set()
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.update({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "config":
            config |= {item.key for item in record.config.update}
    assert {"loss/d", "loss/g", "d/real", "d/fake"} <= set(history)
    assert {"schedule", "optim", "generator", "loss"} <= config
    images = list(log.parent.glob("files/media/images/samples/fixed_noise_*.png"))
    assert len(images) >= 2, "the grid at step 0 and later ones"


def test_mlflow_receives_scalars_hyperparameters_and_grids_as_artifacts(make_cfg, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    train(make_cfg([*RUN, "logger=mlflow", f"logger.mlflow.tracking_uri={store}"]))
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("dcgan").experiment_id])
    losses = client.get_metric_history(run.info.run_id, "loss/d")
    assert len(losses) >= 2 and all(math.isfinite(m.value) for m in losses)  # one per logged step
    assert run.data.params["schedule/n_critic"] == "1" and run.data.params["optim/lr"] == "0.0002"
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "samples/fixed_noise")]
    assert "samples/fixed_noise/step0000000.png" in grids and len(grids) >= 2


def test_many_loggers_write_side_by_side(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    train(make_cfg([*RUN, "logger=many"]))
    run = tmp_path / "run"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "loss/d" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert list((tmp_path / "mlruns").glob("*/*/metrics/loss/d"))


def test_many_skips_a_logger_whose_extra_is_missing_and_drops_it_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from dcgan.platform.configs import CONF_DIR
    from dcgan.tasks import train as training

    monkeypatch.setattr(training, "installed", lambda module: module != "wandb")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    overrides = [*RUN, "logger=many", f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'c'}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as under python train.py: the logger choice is "many"
    with open_dict(cfg):
        cfg.pop("hydra")
    try:
        with caplog.at_level("INFO"):
            train(cfg)
    finally:
        HydraConfig.instance().cfg = None  # the tests after this one run without Hydra, as before
    assert 'logger=many: wandb skipped (pip install "dcgan[wandb]"' in caplog.text
    assert "wandb" not in cfg.logger and {"tensorboard", "csv", "mlflow"} <= set(cfg.logger)
    assert not (tmp_path / "run" / "wandb").exists() and list((tmp_path / "mlruns").glob("*/*/metrics/loss/d"))
