"""The config resolvers: the precision default chosen from what the hardware does natively (bench/), and
metric protocol names (``val/cfid1k_test``)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import ListConfig, OmegaConf


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
    # with Lightning imported, is_available() asks NVML (PYTORCH_NVML_BASED_CUDA_CHECK): no CUDA context is made
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _first_device(devices: Any) -> int:
    """The CUDA index (as this process numbers them) of the job's first GPU: ``trainer.devices`` may be a count,
    ``auto``/-1, a list of indices or a string like ``"2,3"``."""
    if isinstance(devices, str) and "," in devices:
        return int(devices.split(",")[0])
    if isinstance(devices, (list, tuple, ListConfig)) and len(devices) > 0:
        return int(devices[0])
    return 0


def _cuda_capability(index: int) -> tuple[int, int] | None:
    """(major, minor) of CUDA device ``index`` (after ``CUDA_VISIBLE_DEVICES``), read through NVML.

    ``torch.cuda.get_device_capability`` would create a CUDA context in this process, and a context made while
    a config is resolved breaks the forked ranks of ``ddp_fork`` ("Cannot re-initialize CUDA in forked
    subprocess"). NVML is the driver's management library and makes none. None where it cannot be read (no NVML,
    a MIG instance named in ``CUDA_VISIBLE_DEVICES``): then fp32. NVML numbers GPUs in PCI bus order, CUDA by
    default fastest first: on a machine with mixed GPUs set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (as most clusters do)
    for the two to agree.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entry = visible.split(",")[index].strip() if visible else str(index)
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
        handle = ctypes.c_void_p()
        found = (
            nvml.nvmlDeviceGetHandleByIndex_v2(int(entry), ctypes.byref(handle))
            if entry.isdigit()
            else nvml.nvmlDeviceGetHandleByUUID(entry.encode(), ctypes.byref(handle))
        )
        major, minor = ctypes.c_int(), ctypes.c_int()
        if found != 0 or nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)):
            return None
        return major.value, minor.value
    except (OSError, AttributeError, IndexError, ValueError):  # no NVML library, an old one, a bad index
        return None


def native_bf16(accelerator: str = "auto", devices: Any = "auto") -> bool:
    """bf16 convolutions in hardware: AVX512-BF16 or AMX (x86), BF16 (Arm) on the CPU, sm80+ on CUDA.

    Elsewhere PyTorch emulates bf16, which runs slower than fp32, so the fast default is fp32 there. On CUDA the
    job's own first GPU decides (``devices``), read through NVML; where NVML cannot say, fp32.
    """
    if _uses_cuda(accelerator):
        capability = _cuda_capability(_first_device(devices))
        return capability is not None and capability >= (8, 0)
    if accelerator not in ("auto", "cpu"):  # mps, tpu, ...: keep Lightning's fp32
        return False
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & _cpu_flags())


def fast_precision(accelerator: str = "auto", devices: Any = "auto") -> str:
    """``bf16-mixed`` where bf16 is native, else ``32-true`` (``trainer.precision``'s default)."""
    return "bf16-mixed" if native_bf16(str(accelerator), devices) else "32-true"


def register_resolvers() -> None:
    """``${dcgan.fast_precision:${.accelerator},${.devices}}`` (``conf/trainer/default.yaml``) and
    ``${dcgan.protocol:cfid,1000,test}`` -> ``val/cfid1k_test`` (the best checkpoint's monitor, Optuna's metric)."""
    from dcgan.metrics.protocols import monitor_key

    if not OmegaConf.has_resolver("dcgan.fast_precision"):
        OmegaConf.register_new_resolver("dcgan.fast_precision", fast_precision)
    if not OmegaConf.has_resolver("dcgan.protocol"):
        OmegaConf.register_new_resolver("dcgan.protocol", monitor_key)
