"""The redesign of issue 22 changed no number: seeded 20-step runs of each objective reproduce the per-batch losses,
D outputs and final weight sums recorded on c969690, before the objective became parts
(tests/data/trajectories_before_issue22.json, written by tests.probes.LossTrace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcgan.tasks.train import train
from tests.conftest import TINY

RECORDED = json.loads((Path(__file__).parent / "data" / "trajectories_before_issue22.json").read_text())

# arm -> today's overrides; the recording used the old spellings (model/loss=wgan_gp with its implied GP weight 10,
# model.n_critic=5, model.r1_weight=1.0 model.r1_interval=4)
ARMS = {
    "bce": [],
    "hinge": ["model/loss=hinge"],
    "wgan_gp": [
        "model/loss=wasserstein",
        "model/penalty=[gp]",
        "model.discriminator.norm=none",
        "model.schedule.n_critic=5",
    ],
    "r1": ["model/penalty=[r1]", "model.penalty.r1.weight=1.0", "model.penalty.r1.interval=4"],
    "diffaugment_ema": ["model/augment=diffaugment", "model/ema=average"],
}


@pytest.mark.parametrize("arm", list(ARMS))
def test_a_seeded_20_step_run_reproduces_the_recorded_trajectory(arm: str, make_cfg, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    overrides = [*TINY, "trainer.max_steps=20", "trainer.precision=32-true", "~callbacks.quality", "~callbacks.best"]
    overrides += ["logger=csv", "+callbacks.trace._target_=tests.probes.LossTrace", f"+callbacks.trace.out={trace}"]
    train(make_cfg([*overrides, *ARMS[arm]]))
    got, want = json.loads(trace.read_text()), RECORDED[arm]
    assert len(got["steps"]) == len(want["steps"])
    for i, (g, w) in enumerate(zip(got["steps"], want["steps"], strict=True)):
        assert g == pytest.approx(w, rel=1e-6, abs=1e-7), f"batch {i}"
    assert got["weights"] == pytest.approx(want["weights"], rel=1e-9)
