"""What the distribution installs: every package folder under the project's own names, nothing generic."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PRODUCT = [ROOT / "exstream_push", ROOT / "flows", ROOT / "blocks"]


def _package_folders() -> set[str]:
    """Every folder with an ``__init__.py``, by the name it is installed under."""
    mapped = {Path(folder).parts[0]: name for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()}
    names = set()
    for init in ROOT.glob("*/**/__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts[0] in {"tests", ".venv", "build"} or "__pycache__" in parts:
            continue
        head = mapped.get(parts[0], parts[0])
        names.add(".".join([head, *parts[1:]]))
    return names


def test_every_package_folder_is_installed_under_the_projects_names() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert _package_folders() == listed
    assert {name.split(".")[0] for name in listed} == {"exstream_push", "exstream_push_dev"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_product_module_imports_the_development_tools_or_speaks_sql() -> None:
    """Emulators, bench, demo and stack are tools; SQL is the ledger's alone."""
    offenders: dict[str, set[str]] = {}
    for folder in PRODUCT:
        for path in folder.rglob("*.py"):
            in_ledger = path.is_relative_to(ROOT / "exstream_push" / "ledger")
            bad = {
                name
                for name in _imports(path)
                if name.split(".")[0] == "exstream_push_dev"
                or (not in_ledger and name.split(".")[0] in {"sqlalchemy", "sqlmodel"})
            }
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}
