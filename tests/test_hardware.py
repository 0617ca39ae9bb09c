"""Speed-switch defaults follow the hardware: bf16 autocast only where bf16 is native."""

import pytest
import torch

from dcgan.platform import resolvers


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, "bf16-mixed"),
        ({"amx_tile", "amx_bf16"}, "bf16-mixed"),
        ({"fp", "asimd", "bf16"}, "bf16-mixed"),  # aarch64 "Features"
        ({"avx2", "avx512f", "avx512bw"}, "32-true"),  # AVX512 without BF16: bf16 is emulated, slower
        (set(), "32-true"),  # no /proc/cpuinfo
    ],
)
def test_cpu_precision_follows_the_cpu_flags(monkeypatch, flags: set[str], expected: str) -> None:
    monkeypatch.setattr(resolvers, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolvers.fast_precision("cpu") == expected
    assert resolvers.fast_precision("auto") == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_gpu_precision_follows_the_device(monkeypatch, bf16: bool, expected: str) -> None:
    monkeypatch.setattr(resolvers, "_cpu_flags", lambda: {"avx512_bf16"})  # must not matter on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert resolvers.fast_precision("gpu") == expected
    assert resolvers.fast_precision("auto") == expected
    assert resolvers.fast_precision("cpu") == "bf16-mixed"  # an explicit CPU run on that machine


def test_other_accelerators_keep_fp32(monkeypatch) -> None:
    monkeypatch.setattr(resolvers, "_cpu_flags", lambda: {"avx512_bf16"})
    assert resolvers.fast_precision("mps") == "32-true"


def test_cpu_flags_parse_proc_cpuinfo(monkeypatch, tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_tile\n\nprocessor\t: 1\nFeatures\t: bf16 sve\n")
    monkeypatch.setattr(resolvers, "Path", lambda _: info)
    assert {"fpu", "avx512_bf16", "amx_tile", "bf16", "sve"} <= resolvers._cpu_flags()


def test_the_trainer_config_resolves_through_the_hardware_check(make_cfg, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags, expected in (({"avx512_bf16"}, "bf16-mixed"), (set(), "32-true")):
        monkeypatch.setattr(resolvers, "_cpu_flags", lambda flags=flags: flags)
        assert make_cfg(["trainer=cpu"]).trainer.precision == expected
    assert make_cfg(["trainer.precision=16-mixed"]).trainer.precision == "16-mixed"  # a user's choice wins
