"""The import rules in pyproject.toml ([tool.importlinter]) hold: lint-imports passes."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' installs import-linter")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_project_imports_its_own_modules_at_module_level():
    """No function-level import of the project's own modules: they dodge import cycles. The one
    exception is the CLI, which imports a command's module when the command runs, so that
    ``mmllm --help`` loads no torch."""
    found = []
    for root in ("mmllm", "encoders", "demos", "scripts"):
        for path in sorted((ROOT / root).rglob("*.py")):
            if path == ROOT / "mmllm" / "cli.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or ""):
                        found.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
                    names = (
                        [inner.module or ""]
                        if isinstance(inner, ast.ImportFrom)
                        else [a.name for a in inner.names]
                        if isinstance(inner, ast.Import)
                        else []
                    )
                    if any(n.split(".")[0] in ("mmllm", "encoders", "scripts") for n in names):
                        found.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert found == []
