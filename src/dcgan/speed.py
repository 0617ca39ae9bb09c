"""Defaults for the speed switches, chosen per accelerator from what the hardware does natively."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: report no native bf16, fp32 is the safe default
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()[2:]}


def native_bf16(accelerator: str) -> bool:
    """bf16 matmuls/convolutions in hardware: AVX512-BF16 or AMX on the CPU, compute capability >= 8 on CUDA."""
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def fast_precision(accelerator: str = "auto") -> str:
    """ "bf16-mixed" where bf16 is native (measured 1.7x faster for the default run on an AVX512-BF16 CPU,
    with the same sample quality), else "32-true" (emulated bf16 is slower than fp32)."""
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


def register_resolvers() -> None:
    """``${dcgan.fast_precision:${.accelerator}}`` in the trainer configs."""
    if not OmegaConf.has_resolver("dcgan.fast_precision"):
        OmegaConf.register_new_resolver("dcgan.fast_precision", fast_precision)
