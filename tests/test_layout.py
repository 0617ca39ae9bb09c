"""The architecture the folder names promise: the networks and the objective are plain PyTorch, and core code does
not reach for the Lightning callbacks or the platform glue."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dcgan"
PURE = ("nets", "objective")  # plain PyTorch: no Lightning, no Hydra, nothing of the glue
PURE_MAY_IMPORT = ("dcgan.nets", "dcgan.objective", "dcgan.errors")
CORE = [*(SRC / p for p in PURE), SRC / "lightning" / "module.py"]  # core code: none of it imports callbacks


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(where: Path) -> list[Path]:
    return sorted(where.rglob("*.py")) if where.is_dir() else [where]


@pytest.mark.parametrize("package", PURE)
def test_networks_and_objective_import_only_torch_and_each_other(package: str) -> None:
    for path in files(SRC / package):
        for name in imports(path):
            top = name.split(".")[0]
            if top in ("lightning", "hydra", "omegaconf", "pytorch_lightning"):
                pytest.fail(f"{path.relative_to(SRC)} imports {name}: the {package} package must stay plain PyTorch")
            if top == "dcgan" and not name.startswith(PURE_MAY_IMPORT):
                pytest.fail(f"{path.relative_to(SRC)} imports {name}: allowed within dcgan are {PURE_MAY_IMPORT}")


def test_core_code_imports_no_callbacks() -> None:
    for where in CORE:
        for path in files(where):
            bad = {n for n in imports(path) if "callbacks" in n.split(".") or n.startswith("dcgan.lightning.requeue")}
            assert not bad, f"{path.relative_to(SRC)} imports {bad}: core code must not depend on callbacks"


def test_importing_the_networks_and_objective_loads_neither_lightning_nor_hydra() -> None:
    code = (
        "import sys, dcgan.nets, dcgan.objective; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'hydra', 'omegaconf')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checker_would_catch_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lightning.pytorch import Callback\n    import dcgan.lightning.callbacks\n")
    assert {"lightning.pytorch", "dcgan.lightning.callbacks"} <= imports(bad)
