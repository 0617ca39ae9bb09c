"""One validation pass over a composed training config, before anything is built or any file is touched.

Each check names the key, the value it got, what is expected and a fix, in one line. Mistakes the checks
below do not foresee but that a constructor rejects (a ``ValueError`` while the data, model, callbacks or
trainer are built) get the same one-line form through :func:`user_errors`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from dcgan.errors import ArgumentError, UserError


class ConfigError(UserError, ValueError):
    """A config value a user typed cannot work; the message names the key, the value, what is expected and the fix.

    Also a ValueError, as the constructors' own checks are, for callers of ``train()`` that catch those.
    """


_UNSET = object()
_MAX_TIME = re.compile(r"^(\d+):(\d\d):(\d\d):(\d\d)$")  # what Lightning's Timer parses
_PRECISIONS = {"64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true"}
_PRECISIONS |= {"transformer-engine", "transformer-engine-float16"}
_SPECIAL_CKPTS = {"last"}  # Lightning finds <checkpoint dir>/last.ckpt; none yet: a fresh start


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= low


def _limit(v: Any) -> bool:
    return _is_int(v) and (v == -1 or v >= 1)


def _max_time(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(_MAX_TIME.match(v.strip()))) or isinstance(v, (dict, DictConfig))


def _devices(v: Any) -> bool:
    if isinstance(v, str):
        return v == "auto" or v.isdigit() or bool(re.fullmatch(r"\d+(,\d+)*,?", v))
    if isinstance(v, (list, tuple, ListConfig)):
        return len(v) > 0 and all(_is_int(d) and d >= 0 for d in v)
    return _is_int(v) and (v == -1 or v >= 1)


# The keys no constructor of ours checks before training: the run's seed (used by data, model and callbacks alike)
# and the Trainer's, which Lightning checks late (during fit) or not at all. Every other value is checked by the
# class it configures (its ArgumentError names the argument; user_errors() puts the config path in front).
# key -> (valid?, what is expected, a fix); a key absent from the config is not checked
CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "seed": (_is_int, "an integer", "seed=42"),
    "trainer.max_epochs": (
        lambda v: v is None or _limit(v),
        "an integer >= 1, or -1 for no limit",
        "trainer.max_epochs=40",
    ),
    "trainer.max_steps": (
        _limit,
        "an integer >= 1 (global steps), or -1 for no limit",
        "trainer.max_steps=-1",
    ),
    "trainer.max_time": (_max_time, "DD:HH:MM:SS, e.g. 00:00:10:00 for 10 minutes", "trainer.max_time=00:00:10:00"),
    "trainer.log_every_n_steps": (_int_at_least(1), "an integer >= 1 (batches)", "trainer.log_every_n_steps=10"),
    "trainer.precision": (
        lambda v: str(v) in _PRECISIONS,
        f"one of {', '.join(sorted(_PRECISIONS))}",
        "trainer.precision=32-true",
    ),
    "trainer.devices": (_devices, "auto, a count >= 1 (-1: all), or a list of device indices", "trainer.devices=1"),
}


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_UNSET, throw_on_missing=True)
    except Exception as err:  # an interpolation that cannot resolve, a ??? left unset
        raise ConfigError(f"{key}: {err}. Set it on the command line, e.g. {key}=...") from None
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def problems(cfg: DictConfig) -> list[str]:
    """Every value of ``cfg`` that cannot work, one line each: ``key=value: expected ...; e.g. key=...``."""
    found = []
    for key, (valid, expected, fix) in CHECKS.items():
        value = _value(cfg, key)
        if value is _UNSET:
            continue
        if not valid(value):
            found.append(f"{key}={_show(value)}: expected {expected}. Fix: {fix}")
    found += _checkpoint_problems(cfg.get("ckpt_path"))
    found += _output_dir_problems(_value(cfg, "paths.output_dir"))
    return found


def _checkpoint_problems(ckpt_path: Any) -> list[str]:
    if ckpt_path is None or ckpt_path in _SPECIAL_CKPTS:
        return []
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        where = "a folder" if path.is_dir() else "no such file"
        return [
            f"ckpt_path={ckpt_path}: {where}; expected a checkpoint file such as <run dir>/checkpoints/last.ckpt "
            "(or ckpt_path=last to resume this run dir's own). Fix: point it at an existing .ckpt, or drop it."
        ]
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, not a torch file, not a pickle
        return [
            f"ckpt_path={ckpt_path}: not a readable checkpoint ({type(err).__name__}); expected a .ckpt written by "
            "a dcgan run. Fix: use another checkpoint of the run (checkpoints/step*.ckpt)."
        ]
    if not isinstance(checkpoint, dict) or not {"state_dict", "global_step"} <= set(checkpoint):
        return [
            f"ckpt_path={ckpt_path}: a torch file but not a Lightning training checkpoint (no state_dict and "
            "global_step). Fix: use a .ckpt from a dcgan run's checkpoints/ folder."
        ]
    return []


def _output_dir_problems(output_dir: Any) -> list[str]:
    if output_dir is _UNSET or output_dir is None:
        return []
    path = Path(str(output_dir)).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return [
            f"paths.output_dir={output_dir}: cannot be written ({err.strerror or type(err).__name__}); expected a "
            "folder this user can create and write. Fix: hydra.run.dir=<a writable folder> (or paths.output_dir=...)."
        ]
    return []


def check_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of ``cfg``, before training builds anything."""
    found = problems(cfg)
    if found:
        raise ConfigError("\n".join(found) if len(found) == 1 else "Bad config values:\n  " + "\n  ".join(found))


def _with_options(err: ArgumentError) -> str:
    """The message, plus the shipped options where the bad value is a whole node of a config group (model.loss)."""
    from dcgan.platform.configs import CONF_DIR

    group = CONF_DIR.joinpath(*err.argument.split("."))
    if not group.is_dir():
        return str(err)
    options = " | ".join(sorted(p.stem for p in group.glob("*.yaml")))
    return f"{err} Options: {err.argument.replace('.', '/')}={options}, or {err.argument}._target_=<your class>."


@contextlib.contextmanager
def user_errors(prefix: str = "") -> Iterator[None]:
    """Turn the errors torch, Hydra's instantiate and Lightning raise for a config mistake into a ConfigError.

    ``prefix`` is the config path of what is built (``model``, ``callbacks.quality``): a constructor's
    ``ArgumentError`` names its argument, and this is the one place that puts the key in front of it.
    Wraps only the building of data, model, callbacks and trainer: an error inside training keeps its traceback.
    """
    try:
        yield
    except ArgumentError as err:
        raise ConfigError(_with_options(err.at(prefix))) from None
    except UserError:
        raise
    except (InstantiationException, ValueError, TypeError, MisconfigurationException) as err:
        root: BaseException = err
        while isinstance(root, InstantiationException) and root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, ArgumentError):
            raise ConfigError(_with_options(root.at(prefix))) from None
        if isinstance(root, UserError):
            raise root from None
        if isinstance(err, TypeError) and root is err:
            raise  # a TypeError outside instantiate is a bug in our code, not a user's value
        target = re.search(r"target '([^']+)'", str(err))
        where = f" (building {target.group(1)})" if target else ""
        raise ConfigError(f"{type(root).__name__}{where}: {root}") from None


def override_value(value: str) -> str:
    """A command-line override's value as Hydra reads it: ``"/runs/a b"`` is ``/runs/a b``, not a folder named with
    a quote (the rank command of a DDP job quotes its run dir)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(f"key={value}").value()
    except Exception:  # Hydra reports a malformed override itself, in its own words
        return value
    return parsed if isinstance(parsed, str) else value


def check_run_dirs(argv: list[str]) -> str | None:
    """One line for a ``hydra.run.dir=`` or ``hydra.sweep.dir=`` on the command line that cannot be created (or
    written); None when they can. Hydra itself would end in a traceback while it creates the dir."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            found = _output_dir_problems(override_value(value))
            if found:
                return found[0].replace("paths.output_dir=", f"{key.lstrip('+~')}=", 1)
    return None
