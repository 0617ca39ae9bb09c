"""A NaN loss stops the run with the step and the loss named, the last checkpoint on disk predates it, and an
Optuna study records such a trial as failed and goes on to the next."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig

from dcgan.errors import DivergenceError
from dcgan.tasks.train import train
from tests.conftest import TINY, train_py
from tests.test_sweeps import job_dirs


class Poison(L.Callback):
    """Sets one of G's weights to NaN before batch ``at_batch`` (only in sweep job ``job``, when given)."""

    def __init__(self, at_batch: int, job: int | None = None) -> None:
        self.at_batch, self.job = at_batch, job

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.job is not None and HydraConfig.get().job.num != self.job:
            return
        if trainer.fit_loop.total_batch_idx == self.at_batch:
            with torch.no_grad():
                next(pl_module.generator.parameters()).fill_(float("nan"))


def _poisoned(make_cfg, at_batch: int, *overrides: str):
    poison = ["+callbacks.poison._target_=tests.test_divergence.Poison", f"+callbacks.poison.at_batch={at_batch}"]
    return make_cfg([*TINY, "~callbacks.quality", "~callbacks.best", *poison, *overrides])


def _finite(ckpt: Path) -> bool:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# caught at a check / caught by the next save / by the next save of weights only (no callback hooks then)
@pytest.mark.parametrize(("every_n_batches", "weights_only"), [(3, False), (100, False), (100, True)])
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    make_cfg, tmp_path: Path, every_n_batches: int, weights_only: bool
) -> None:
    cfg = _poisoned(make_cfg, 5, "callbacks.checkpoint.every_n_train_steps=4", "trainer.max_steps=40",
                    f"callbacks.divergence.every_n_batches={every_n_batches}",
                    f"+callbacks.checkpoint.save_weights_only={weights_only}")  # fmt: skip
    with pytest.raises(DivergenceError) as err:
        train(cfg)
    message = str(err.value)
    assert "loss/d became NaN or inf at global step 10" in message  # batch 5, 2 steps a batch
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step0000004.ckpt", "step0000008.ckpt"]
    assert f"ckpt_path={checkpoints / 'last.ckpt'}" in message
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 8
    assert _finite(checkpoints / "last.ckpt")


def test_the_guard_checks_every_n_batches(make_cfg, monkeypatch) -> None:
    from dcgan.lightning.callbacks import DivergenceGuard

    reads: list[int] = []
    original = DivergenceGuard.check

    def counted(self, trainer, pl_module) -> None:
        reads.append(trainer.global_step)
        original(self, trainer, pl_module)

    monkeypatch.setattr(DivergenceGuard, "check", counted)
    cfg = make_cfg([*TINY, "~callbacks.quality", "~callbacks.best", "trainer.max_steps=24",
                    "callbacks.divergence.every_n_batches=4",
                    "callbacks.checkpoint.every_n_train_steps=0"])  # fmt: skip
    train(cfg)
    assert reads[:3] == [8, 16, 24]  # every 4th batch (2 steps each), then the checks of the final save


@pytest.mark.slow
def test_an_optuna_study_records_a_diverged_trial_as_failed_and_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}",
         "+callbacks.poison._target_=tests.test_divergence.Poison", "+callbacks.poison.at_batch=3",
         "+callbacks.poison.job=1"],
        tmp_path,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert "became NaN or inf" in output and "Failed experiment" in output
    assert len(job_dirs(sweep)) == 3  # the trial after the diverged one ran
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] > 0
