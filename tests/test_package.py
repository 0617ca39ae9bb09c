"""The project as a package: a built wheel trains from any folder, users add config options from their own
folder, and a config whose optional extra is missing says which one to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dcgan.platform import cli, extras
from tests.conftest import ROOT, TINY

USER_CONFIGS = {
    "experiment/mine.yaml": "# @package _global_\nmodel:\n  optim:\n    lr: 1.234e-4\n",
    "data/few_digits.yaml": "defaults:\n  - digits\n  - _self_\nbatch_size: 17\n",
}


def user_config_dir(root: Path) -> Path:
    for name, text in USER_CONFIGS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_options_from_a_users_config_dir_compose_with_the_shipped_ones(tmp_path: Path) -> None:
    mine = user_config_dir(tmp_path / "my_configs")
    shown = run(
        [sys.executable, "train.py", f"--config-dir={mine}", "experiment=mine", "data=few_digits", "--cfg", "job"], ROOT
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "lr: 0.0001234" in shown.stdout and "batch_size: 17" in shown.stdout
    assert "_target_: dcgan.data.DigitsDataModule" in shown.stdout  # the shipped option it builds on


def test_dcgan_config_dir_trains_from_another_folder_into_its_outputs(tmp_path: Path) -> None:
    """``python -m dcgan train`` run in a folder outside the checkout, the user's options from $DCGAN_CONFIG_DIR."""
    mine, work = user_config_dir(tmp_path / "my_configs"), tmp_path / "work"
    work.mkdir()
    tiny = [o for o in TINY if not o.startswith("data.batch_size")]
    args = [*tiny, "experiment=mine", "data=few_digits", "trainer.max_steps=4", f"paths.cache_dir={tmp_path / 'cache'}"]
    done = run([sys.executable, "-m", "dcgan", "train", *args], work, DCGAN_CONFIG_DIR=str(mine))
    assert done.returncode == 0, done.stderr[-3000:]
    (config,) = work.glob("outputs/runs/*/*/.hydra/config.yaml")
    text = config.read_text()
    assert "lr: 0.0001234" in text and "batch_size: 17" in text
    assert (config.parent.parent / "checkpoints" / "last.ckpt").is_file()


def test_a_missing_config_dir_is_one_line(tmp_path: Path) -> None:
    done = run([sys.executable, "train.py", "--cfg", "job"], ROOT, DCGAN_CONFIG_DIR=str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "DCGAN_CONFIG_DIR=" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("override", "extra"),
    [
        ("hparams_search=optuna", "optuna"),
        ("hydra/launcher=slurm", "slurm"),
        ("logger=wandb", "wandb"),
        ("logger=[tensorboard,mlflow]", "mlflow"),
    ],
)
def test_a_config_whose_extra_is_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, override: str, extra: str
) -> None:
    monkeypatch.setattr(extras, "installed", lambda module: False)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", override])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert f"needs the [{extra}] extra" in message and f'pip install "dcgan[{extra}]"' in message


def test_options_without_extras_need_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "installed", lambda module: False)
    extras.check_command_line(["logger=csv", "hydra/launcher=gpus", "model.optim.lr=1e-4", "data=mnist"])


@pytest.mark.slow
def test_a_built_wheel_trains_from_any_folder_in_a_fresh_venv(tmp_path: Path) -> None:
    """Acceptance: ``pip install <wheel>`` (no -e, no checkout on the path), then ``cd /tmp && dcgan-train``."""
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."]
    assert run(build, ROOT).returncode == 0
    (wheel,) = wheels.glob("dcgan-*.whl")
    assert run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    installed = run([*pip, str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    work.mkdir()
    clean = {"PYTHONPATH": "", "DCGAN_CACHE_DIR": str(tmp_path / "cache")}
    where = run([str(venv / "bin" / "python"), "-c", "import dcgan, optuna"], work, **clean)
    assert "No module named 'optuna'" in where.stderr, "the core install leaves the optional extras out"

    trained = run([str(venv / "bin" / "dcgan-train"), "trainer.max_steps=20"], work, **clean)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Error importing" not in trained.stderr, "Hydra's plugin scan imports cleanly without the extras"
    (last,) = work.glob("outputs/runs/*/*/checkpoints/last.ckpt")
    shown = run([str(venv / "bin" / "python"), "-m", "dcgan", "generate", "--cfg", "job"], work, **clean)
    assert shown.returncode == 0 and "ckpt_path" in shown.stdout
    assert str(ROOT) not in (last.parent.parent / ".hydra" / "hydra.yaml").read_text(), "configs from the wheel"
