"""Hydra launcher plugins of the dcgan project (Hydra loads plugins only from ``hydra_plugins``)."""
