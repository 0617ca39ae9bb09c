"""Optional extras: the configs that need a package the core install leaves out, and the one-line error for them.

Hydra resolves ``hparams_search=optuna`` or ``hydra/launcher=slurm`` before any project code runs, and its
own error for a missing plugin is a screen of "could not find hydra/sweeper/optuna" options. The entry
points look at the command line first (:func:`check_command_line`) and name the extra to install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from dcgan.errors import UserError

# "group=option" on the command line -> (the module it needs, the extra that installs it)
NEEDS: dict[str, tuple[str, str]] = {
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=slurm_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "logger=wandb": ("wandb", "wandb"),
    "logger=mlflow": ("mlflow", "mlflow"),
}


class MissingExtra(UserError):
    """A config was chosen whose optional dependency is not installed."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` unless ``module`` can be imported."""
    if not installed(module):
        raise MissingExtra(
            f"{what} needs the [{extra}] extra, which is not installed ({module} not found). "
            f'Fix: pip install "dcgan[{extra}]" (or "dcgan[all]"; from a checkout: pip install -e ".[{extra}]").'
        )


def check_command_line(args: Sequence[str]) -> None:
    """Check every ``group=option`` of ``args`` that needs an extra (``logger=[tensorboard,wandb]`` too)."""
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        for option in value.strip("[]").split(","):
            need = NEEDS.get(f"{key}={option.strip()}")
            if need is not None:
                require(*need, what=f"{key}={option.strip()}")
