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


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "bf16-mixed"), ((7, 5), "32-true"), (None, "32-true")])
def test_gpu_precision_follows_the_device(monkeypatch, capability: tuple | None, expected: str) -> None:
    monkeypatch.setattr(resolvers, "_cpu_flags", lambda: {"avx512_bf16"})  # must not matter on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(resolvers, "_cuda_capability", lambda index: capability)
    assert resolvers.fast_precision("gpu") == expected
    assert resolvers.fast_precision("auto") == expected
    assert resolvers.fast_precision("cpu") == "bf16-mixed"  # an explicit CPU run on that machine


def test_the_jobs_own_gpu_decides(monkeypatch) -> None:
    """A job on GPU 2 of a machine whose GPU 0 is older: the precision follows GPU 2."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        resolvers, "_cuda_capability", lambda index: asked.append(index) or ((9, 0) if index else (7, 0))
    )
    assert resolvers.fast_precision("gpu", [2]) == "bf16-mixed"
    assert resolvers.fast_precision("gpu", "2,3") == "bf16-mixed"
    assert resolvers.fast_precision("gpu", 1) == "32-true"  # a count: the first visible GPU, 0
    assert asked == [2, 2, 0]


def test_nvml_reads_the_visible_device_it_is_told(monkeypatch) -> None:
    calls = {}

    class FakeNVML:
        def nvmlInit_v2(self) -> int:
            return 0

        def nvmlDeviceGetHandleByIndex_v2(self, index, handle) -> int:
            calls["index"] = index
            return 0

        def nvmlDeviceGetHandleByUUID(self, uuid, handle) -> int:
            calls["uuid"] = uuid
            return 0

        def nvmlDeviceGetCudaComputeCapability(self, handle, major, minor) -> int:
            major._obj.value, minor._obj.value = 8, 6
            return 0

    monkeypatch.setattr(resolvers.ctypes, "CDLL", lambda name: FakeNVML())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert resolvers._cuda_capability(2) == (8, 6) and calls["index"] == 6  # NVML numbers GPUs physically
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,GPU-def")
    assert resolvers._cuda_capability(1) == (8, 6) and calls["uuid"] == b"GPU-def"
    monkeypatch.setattr(resolvers.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError("no libnvidia-ml")))
    assert resolvers._cuda_capability(0) is None


def test_resolving_a_gpu_config_creates_no_cuda_context(make_cfg, monkeypatch) -> None:
    """Composing and resolving trainer=gpu on a machine with GPUs calls nothing that initialises CUDA."""

    def no_cuda(*args: object, **kwargs: object) -> None:
        raise AssertionError("CUDA initialised while the config was resolved")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("_lazy_init", "init", "is_bf16_supported", "get_device_properties", "get_device_capability",
                 "current_device", "set_device"):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    monkeypatch.setattr(resolvers, "_cuda_capability", lambda index: (9, 0))
    assert make_cfg(["trainer=gpu"]).trainer.precision == "bf16-mixed"
    assert make_cfg(["trainer=gpu", "trainer.devices=[1]"]).trainer.precision == "bf16-mixed"


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
