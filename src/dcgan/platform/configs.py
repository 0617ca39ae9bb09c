"""Where the configs are: inside an installed wheel, or the checkout's top-level ``conf/`` (the one copy)."""

from __future__ import annotations

from pathlib import Path

from dcgan.platform.resolvers import register_resolvers


def _conf_dir() -> Path:
    """The configs: ``dcgan/conf/`` (in a checkout a symlink to the top-level ``conf/``, in a wheel its copy)."""
    packaged = (Path(__file__).resolve().parents[1] / "conf").resolve()  # in a checkout: a symlink to conf/
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "conf"


CONF_DIR = _conf_dir()
CONFIG_DIR_ENV = "DCGAN_CONFIG_DIR"  # a folder of the user's own config options, searched before the shipped ones
register_resolvers()  # whoever locates conf/ gets the resolvers it uses (dcgan.fast_precision, dcgan.protocol)
