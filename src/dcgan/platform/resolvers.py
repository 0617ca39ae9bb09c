"""The config resolvers: the precision default chosen from what the hardware does natively (bench/), and
metric protocol names (``val/cfid1k_test``)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell, so assume no native bf16 (fp32 is the safe default)
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 | aarch64
            flags.update(value.split())
    return flags


def _uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def native_bf16(accelerator: str = "auto") -> bool:
    """bf16 convolutions in hardware: AVX512-BF16 or AMX (x86), BF16 (Arm) on the CPU, sm80+ on CUDA.

    Elsewhere PyTorch emulates bf16, which runs slower than fp32, so the fast default is fp32 there.
    """
    if _uses_cuda(accelerator):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if accelerator not in ("auto", "cpu"):  # mps, tpu, ...: keep Lightning's fp32
        return False
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & _cpu_flags())


def fast_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where bf16 is native, else ``32-true`` (``trainer.precision``'s default)."""
    return "bf16-mixed" if native_bf16(str(accelerator)) else "32-true"


def register_resolvers() -> None:
    """``${dcgan.fast_precision:${.accelerator}}`` (``conf/trainer/default.yaml``) and
    ``${dcgan.protocol:cfid,1000,test}`` -> ``val/cfid1k_test`` (the best checkpoint's monitor, Optuna's metric)."""
    from dcgan.metrics.protocols import monitor_key

    if not OmegaConf.has_resolver("dcgan.fast_precision"):
        OmegaConf.register_new_resolver("dcgan.fast_precision", fast_precision)
    if not OmegaConf.has_resolver("dcgan.protocol"):
        OmegaConf.register_new_resolver("dcgan.protocol", monitor_key)
