"""The GPU tests' checks can fail: each is run here, on the CPU, against the behaviour it guards and against that
behaviour broken. (Which checks this cannot reach, for want of a GPU: docs/scaling.md, "What has run on a GPU".)"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from dcgan.nets import Discriminator
from tests.conftest import ROOT
from tests.probes import Meet
from tests.test_gpu import ActivationDtypes, MemoryFormat
from tests.test_switches import trajectory


@pytest.fixture(scope="module")
def baseline() -> torch.Tensor:
    return trajectory()


def test_the_bf16_check_sees_autocast_off() -> None:
    """test_bf16_mixed_trains_on_the_gpu asserts D's convolutions output bf16: true under bf16-mixed, false in fp32."""
    for precision, expected in (("bf16-mixed", {torch.bfloat16}), ("32-true", {torch.float32})):
        ActivationDtypes.seen.clear()
        trajectory(batches=1, precision=precision, callbacks=(ActivationDtypes(),))
        assert set(ActivationDtypes.seen) == expected, precision


def test_the_channels_last_check_sees_an_nchw_weight() -> None:
    """test_channels_last_with_cudnn_benchmark_... asserts NHWC on a conv with > 1 input channel; the old check (the
    first conv, 1 input channel on the digits) passed on a plain NCHW weight, so it could not fail."""
    first = next(m for m in Discriminator(ndf=8, image_size=16, channels=1).modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.is_contiguous(memory_format=torch.channels_last)  # NCHW, yet "channels_last"
    MemoryFormat.seen.clear()
    trajectory(batches=1, channels_last=True, callbacks=(MemoryFormat(),))
    trajectory(batches=1, channels_last=False, callbacks=(MemoryFormat(),))
    assert MemoryFormat.seen == [(False, True), (False, False)]  # on a GPU the test asserts (True, True), (True, False)


@pytest.mark.parametrize(("tolerance", "lr"), [(1e-3, 2.5e-4), (1e-4, 2.05e-4)])
def test_the_trajectory_checks_catch_a_different_update(baseline: torch.Tensor, tolerance: float, lr: float) -> None:
    """The cuDNN-benchmark and compile tests on CUDA compare 8 steps' losses at 1e-3 (room for other kernels' and
    TF32's rounding), fused Adam at 1e-4. Measured here: a learning rate 25% off fails the first, 2.5% off the second
    (10% off stays within 1e-3: that tolerance catches a wrong update, not a slightly different one)."""
    with pytest.raises(AssertionError):
        torch.testing.assert_close(trajectory(lr=lr), baseline, atol=tolerance, rtol=tolerance)


def test_the_side_by_side_check_fails_for_jobs_run_one_after_the_other(tmp_path: Path) -> None:
    """The gpus-launcher tests meet at a rendezvous: jobs that overlap meet, jobs run in turn do not."""
    together = [Meet(str(tmp_path / "together"), count=2, timeout_s=30) for _ in range(2)]
    threads = [threading.Thread(target=m.on_fit_start, args=(None, None)) for m in together]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    in_turn = tmp_path / "in_turn"
    for _ in range(2):
        Meet(str(in_turn), count=2, timeout_s=0.3).on_fit_start(None, None)
    met = [p.read_text() for p in sorted((tmp_path / "together").glob("*.json"))]
    assert len(met) == 2 and all('"met": true' in m for m in met)
    assert sorted('"met": true' in p.read_text() for p in in_turn.glob("*.json")) == [False, True]


def _report(tmp_path: Path, cases: str, *flags: str) -> subprocess.CompletedProcess:
    junit = tmp_path / "junit.xml"
    junit.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_report.py"), str(junit), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_the_gpu_report_lists_each_skip_and_fails_when_nothing_ran_on_a_gpu(tmp_path: Path) -> None:
    skipped = '<testcase classname="tests.test_gpu" name="test_a"><skipped message="needs 2 GPUs"/></testcase>'
    passed = '<testcase classname="tests.test_gpu" name="test_b"/>'
    only_skips = _report(tmp_path, skipped, "--require-pass")
    assert only_skips.returncode == 1
    assert "skipped  tests.test_gpu::test_a  -- needs 2 GPUs" in only_skips.stdout
    assert "NOTHING RAN on a GPU" in only_skips.stdout
    assert _report(tmp_path, skipped).returncode == 0  # the CPU dry run: skips are expected there
    mixed = _report(tmp_path, skipped + passed, "--require-pass")
    assert mixed.returncode == 0 and "tests: 1 passed, 1 skipped" in mixed.stdout
    missing = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_report.py"), str(tmp_path / "none.xml")], capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1 and "pytest did not finish" in missing.stdout
