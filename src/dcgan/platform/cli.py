"""The Hydra entry points, kept thin: ``dcgan-train``, ``dcgan-generate``, ``dcgan-evaluate`` (and ``python -m dcgan``).

Each composes its config and calls a task function that takes the config and returns a result:
``dcgan.tasks.train.train``, ``dcgan.tasks.generate.generate``, ``dcgan.tasks.evaluate.evaluate``. Here: what
the command line needs around them (a missing extra named, the user's config dir, one-line errors and exit codes).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from dcgan.errors import UserError
from dcgan.lightning.checkpoint_io import DiskFullError
from dcgan.lightning.interrupt import EXIT_STATUS, Interrupted
from dcgan.platform.configs import CONF_DIR, CONFIG_DIR_ENV
from dcgan.platform.extras import MissingExtra, check_command_line
from dcgan.platform.rundir import holder_of, refusal
from dcgan.platform.validation import check_run_dirs, override_value
from dcgan.tasks.evaluate import evaluate
from dcgan.tasks.generate import generate
from dcgan.tasks.train import resume_command, train
from dcgan.tasks.visualize import visualize

log = logging.getLogger("dcgan")


def objective(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a sweeper optimises: ``metrics[cfg.optimized_metric]``, or None when no metric is named."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(
            f"optimized_metric={name}: this run logged no such metric (it logged {sorted(metrics) or 'none'}). "
            "Name one of those, or make the run log it (val/cfid<N>_<split> needs labelled data and callbacks.quality)."
        )
    return metrics[name]


def _exit_with(err: BaseException) -> None:
    """Print a user's mistake as the error lines it is and exit with status 2, without a traceback.

    In a sweep (``-m``) the error is raised instead: the launcher records the job as failed and runs the others
    (an exit would end the whole sweep), and an Optuna study records the trial as failed and goes on.
    """
    for line in str(err).splitlines():
        log.error("%s", line)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise err
    sys.exit(2)


def _before_hydra(entry: Any) -> Any:
    """Wrap a Hydra entry point: name a missing optional extra or an uncreatable run dir in one line, and add
    ``$DCGAN_CONFIG_DIR``.

    All act on the command line, because Hydra resolves config groups (and fails on a missing plugin) before
    any of this project's code runs.
    """

    @functools.wraps(entry)
    def run() -> Any:
        try:
            check_command_line(sys.argv[1:])
        except MissingExtra as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)
        if problem := check_run_dirs(sys.argv[1:]) or _run_dir_in_use(sys.argv[1:]):
            print(f"Error: {problem}", file=sys.stderr)
            sys.exit(2)
        user_dir = os.environ.get(CONFIG_DIR_ENV)
        if user_dir and not any(a.startswith(("--config-dir", "-cd")) for a in sys.argv[1:]):
            if not Path(user_dir).expanduser().is_dir():
                print(f"Error: {CONFIG_DIR_ENV}={user_dir}: not a folder. Fix: point it at yours.", file=sys.stderr)
                sys.exit(2)
            sys.argv.insert(1, f"--config-dir={Path(user_dir).expanduser().resolve()}")
        return entry()

    return run


def _run_dir_in_use(argv: list[str]) -> str | None:
    """One line when ``hydra.run.dir=`` names a dir another process trains in: said before Hydra writes its
    ``.hydra/`` record and ``train.log`` there. (``train()`` takes the lock itself; this only answers early.)"""
    if any(os.environ.get(key, "0") != "0" for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")):
        return None  # another rank of a job whose rank zero holds the lock
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra.run.dir" and value and "${" not in value:
            run_dir = Path(override_value(value)).expanduser()
            holder = holder_of(run_dir)
            return refusal(run_dir.resolve(), holder) if holder else None
    return None


@_before_hydra
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """``python train.py`` / ``dcgan-train``: Hydra composes ``conf/train.yaml`` with the overrides.

    Returns ``optimized_metric``'s final value, which Hydra hands to sweepers (Optuna minimises it).
    """
    logging.raiseExceptions = False  # on a full disk train.log fails too: no "Logging error" traceback per log line
    try:
        return objective(cfg, train(cfg))
    except DiskFullError as err:
        _exit_with(UserError(f"{err} Make room there (or move the run dir), then continue with: {_continue(err, cfg)}"))
    except UserError as err:  # the message already says what is wrong and how to fix it
        _exit_with(err)
    except SIGTERMException:  # last.ckpt was written at the step it stopped (GANCheckpoint.on_exception)
        log.warning("Stopped by SIGTERM. Continue with: %s", resume_command(_run_dir(cfg)))
        sys.exit(128 + signal.SIGTERM)  # in a sweep too: the sweep stops; re-issued, each job resumes its own
    except Interrupted as stop:  # the first Ctrl-C: last.ckpt written at a batch boundary (StopOnCtrlC)
        log.warning("%s Continue with: %s", stop, resume_command(_run_dir(cfg)))
        sys.exit(EXIT_STATUS)
    except KeyboardInterrupt:  # before trainer.fit: StopOnCtrlC handles Ctrl-C from the first batch on
        _stopped_before_training(cfg)
    except SystemExit as exit_:  # Lightning's answer to a Ctrl-C inside fit before the first batch: sys.exit(1)
        if isinstance(exit_.__context__, KeyboardInterrupt):
            _stopped_before_training(cfg)
        raise


def _stopped_before_training(cfg: DictConfig) -> None:
    log.warning("Ctrl-C before the first batch: nothing new was trained. Start again with: %s",
                resume_command(_run_dir(cfg)))  # fmt: skip
    sys.exit(EXIT_STATUS)


def _run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir).resolve()


def _continue(err: DiskFullError, cfg: DictConfig) -> str:
    """The command that continues from the last good checkpoint: ``last`` where that is last.ckpt, else the file."""
    command = resume_command(_run_dir(cfg))
    if err.last_good and Path(err.last_good[1]).name != "last.ckpt":
        command = command.replace("ckpt_path=last", f"ckpt_path={err.last_good[1]}")
    return command


def _tool(task: Callable[[DictConfig], Any], config_name: str, command: str) -> Callable[[], Any]:
    """A Hydra entry point that runs ``task`` on ``conf/<config_name>.yaml`` and ends a mistake the user can fix in
    its one-line message (exit 2) rather than a traceback."""

    @_before_hydra
    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def run(cfg: DictConfig) -> None:
        try:
            task(cfg)
        except (UserError, FileNotFoundError) as err:  # the message says what is wrong and how to fix it
            _exit_with(err)

    run.__doc__ = f"``python {config_name}.py`` / ``{command}``."
    return run


generate_main = _tool(generate, "generate", "dcgan-generate")
evaluate_main = _tool(evaluate, "evaluate", "dcgan-evaluate")
visualize_main = _tool(visualize, "visualize", "dcgan-visualize")


if __name__ == "__main__":  # python -m dcgan.platform.cli: how dcgan.platform.distributed starts the other DDP ranks
    main()
