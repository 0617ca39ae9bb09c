"""notebooks/explore.ipynb runs end to end on a tiny checkpoint, and is committed without outputs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from dcgan.tasks.train import train
from tests.conftest import TINY

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat and nbclient (the dev extra)")
NotebookClient = pytest.importorskip("nbclient", reason="needs nbclient (the dev extra)").NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


def _set(source: str, name: str, value: object) -> str:
    """Replace the notebook's own ``NAME = ...`` line, keeping the rest of the cell (RUN_DIR's derivation)."""
    source, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.MULTILINE)
    assert count == 1, f"the parameters cell should assign {name} exactly once"
    return source


@pytest.fixture
def python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A "python3" kernelspec running this interpreter, ahead of any user or system one on JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # An inherited MPLBACKEND=Agg would replace the inline backend: plots would then leave no image output.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return "python3"


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_checkpoint(make_cfg, tmp_path: Path, python3_kernel: str) -> None:
    train(make_cfg([*TINY, "trainer.max_steps=8", "trainer.log_every_n_steps=1"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = _parameters_cell(nb)
    cell.source = _set(_set(cell.source, "CKPT", str(ckpt)), "SEED", 1)
    client = NotebookClient(nb, timeout=300, kernel_name=python3_kernel, resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    outputs = [out for c in nb.cells if c.cell_type == "code" for out in c.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    # samples, interpolation, pool, arithmetic, loss curves (the tiny run ends before any val/* metric)
    assert len(images) >= 5


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code), "strip outputs before committing"
    assert _parameters_cell(nb).source.startswith("CKPT = ")
