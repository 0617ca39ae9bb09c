"""Every bad value a user can type fails before training: one clear message, a non-zero exit, no traceback,
and the checkpoint the command named left as it was. Each command runs as ``python train.py`` would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from dcgan.platform.configs import CONF_DIR
from dcgan.platform.validation import ConfigError, check_train_config
from dcgan.tasks.train import train
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real last.ckpt of a 4-step run: every bad command names it, and none may touch it."""
    run = tmp_path_factory.mktemp("good")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={run}", f"paths.cache_dir={run / 'cache'}", *TINY,
                                          "trainer.max_steps=4", "~callbacks.quality", "~callbacks.best"])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# (override(s) with {ckpt}/{tmp} placeholders, what the message must contain)
BAD = [
    (["model.optim.lr=-1e-3"], "model.optim.lr=-0.001: expected a learning rate > 0"),
    (["data.batch_size=0"], "data.batch_size=0: expected an integer >= 1"),
    (["model.optim.betas=[0.5,1.5]"], "model.optim.betas=[0.5, 1.5]: expected two values in [0, 1)"),
    (["data.image_size=48"], "data.image_size=48: expected a power of two >= 16"),
    (["data.channels=2"], "data.channels=2: expected 1 (gray) or 3 (RGB)"),
    (["model.generator.nz=0"], "model.generator.nz=0: expected an integer >= 1"),
    (["model.schedule.n_critic=0"], "model.schedule.n_critic=0: expected an integer >= 1"),
    (["model/ema=average", "model.ema.decay=1.5"], "model.ema.decay=1.5: expected a decay in (0, 1)"),
    (
        ["model.loss=wgan"],
        "model.loss=wgan: expected a node with _target_ (the class to build and its arguments). "
        "Options: model/loss=bce | hinge | lsgan | wasserstein",
    ),
    (["model/penalty=[r1]", "model.penalty.r1.weight=-1"], "model.penalty.r1.weight=-1: expected a weight >= 0"),
    (["model/penalty=[r1]", "model.penalty.r1.interval=0"], "model.penalty.r1.interval=0: expected an integer >= 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: expected an integer >= 1, or -1"),
    (["trainer.max_time=10min"], "trainer.max_time=10min: expected DD:HH:MM:SS"),
    (["trainer.precision=fp8"], "trainer.precision=fp8: expected one of"),
    (["seed=abc"], "seed=abc: expected an integer"),
    (["callbacks.quality.num_samples=1"], "callbacks.quality.num_samples=1: expected an integer >= 2"),
    (["ckpt_path={tmp}/missing.ckpt"], "missing.ckpt: no such file"),
    (["ckpt_path={tmp}/notes.txt"], "notes.txt: not a readable checkpoint"),
    (["ckpt_path={tmp}/weights.pt"], "weights.pt: a torch file but not a Lightning training checkpoint"),
    (["paths.output_dir={tmp}/notes.txt/run"], "cannot be written"),
    (["model.discriminator.norm=layer"], "model.discriminator.norm=layer: expected batch or none"),
    (["callbacks.samples.every_n_steps=-1"], "callbacks.samples.every_n_steps=-1: expected an integer >= 0"),
    (["hydra.run.dir={tmp}/notes.txt/run"], "hydra.run.dir={tmp}/notes.txt/run: cannot be written (Not a directory)"),
    (["hydra.sweep.dir={tmp}/notes.txt/sweep"], "hydra.sweep.dir={tmp}/notes.txt/sweep: cannot be written (Not a"),
    (["callbacks.requeue.signal=USR9"], "callbacks.requeue.signal='USR9': expected auto, off or a signal name"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_fails_before_training_in_one_line(
    overrides: list[str], message: str, checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"generator": {}}, tmp_path / "weights.pt")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    message = message.format(tmp=tmp_path)
    if not any(o.startswith("ckpt_path=") for o in overrides):
        overrides.append(f"ckpt_path={checkpoint}")
    before = _fingerprint(checkpoint.parent)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", *TINY, f"paths.cache_dir={tmp_path / 'cache'}"]
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        cmd.append(f"hydra.run.dir={run_dir}")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # as a user runs it
    proc = subprocess.run([*cmd, *overrides], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert message in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert _fingerprint(checkpoint.parent) == before  # the named checkpoint and its folder untouched
    assert not (run_dir / "checkpoints").exists()  # nothing trained, nothing saved


@pytest.mark.slow
def test_an_unknown_key_is_hydras_one_line_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    cmd = [sys.executable, "train.py", "model.optim.lrr=1e-4", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "Key 'lrr' is not in struct" in proc.stderr and "Traceback" not in proc.stderr


def test_every_problem_of_a_config_is_listed_at_once(make_cfg) -> None:
    """The run-level keys no constructor checks are listed together; the rest is each class's own check."""
    cfg = make_cfg(["seed=abc", "trainer.log_every_n_steps=0", "trainer.max_steps=0"])
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    lines = str(err.value).splitlines()
    assert lines[0] == "Bad config values:"
    assert [line.strip().split(":")[0] for line in lines[1:]] == [
        "seed=abc",
        "trainer.max_steps=0",
        "trainer.log_every_n_steps=0",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1 (images per device and step). Fix: "
                              "data.batch_size=128"),
        ("model.optim.lr=0", "model.optim.lr=0: expected a learning rate > 0 (the paper: 2e-4). Fix: "
                             "model.optim.lr=2e-4"),
        ("model.schedule.n_critic=0", "model.schedule.n_critic=0: expected an integer >= 1 (D steps per G step). "
                                      "Fix: model.schedule.n_critic=1"),
        ("model.generator.ngf=0", "model.generator.ngf=0: expected an integer >= 1"),
        ("callbacks.checkpoint.every_n_train_steps=-5", "callbacks.checkpoint.every_n_train_steps=-5: expected an "
                                                         "integer >= 0"),
    ],
)  # fmt: skip
def test_a_constructors_check_names_the_config_key(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        train(make_cfg([*TINY, override]))
    assert str(err.value).startswith(message)


def test_the_shipped_configs_pass_the_validation(make_cfg) -> None:
    for experiment in sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")):
        check_train_config(make_cfg([f"experiment={experiment}"]))
    for trainer in sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")):
        check_train_config(make_cfg([f"trainer={trainer}"]))
    check_train_config(make_cfg(["debug=fdr", "trainer.max_time=00:00:10:00"]))


def test_a_quoted_run_dir_is_checked_where_hydra_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DDP rank's command quotes its run dir: the check must not create a folder named with the quote in the cwd."""
    from dcgan.platform.validation import check_run_dirs, override_value

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "a run"
    assert override_value(f'"{run_dir}"') == str(run_dir) and override_value("plain/dir") == "plain/dir"
    assert check_run_dirs([f'hydra.run.dir="{run_dir}"']) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a run"]
