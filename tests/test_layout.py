"""The layout the design fixes: every package is installed, models/ stands on its own, and nothing outside
datasets/ and the evaluators names a data set."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"bench": "mrfbench", "models": "mrfbench.models", "datasets": "mrfbench.datasets"}
SHARED = ("mrfbench.errors", "mrfbench.plugins")  # what models/ may import from bench/


def test_every_package_is_installed():
    listed = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    found = {FOLDERS[init.relative_to(ROOT).parts[0]] + "".join(f".{p}" for p in init.relative_to(ROOT).parts[1:-1])
             for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    assert found <= set(re.findall(r'"([\w.]+)"', listed))


def test_models_import_only_models_errors_and_plugins():
    """models/ stands on its own: beside itself it reads only the errors and the plugin discovery, which
    import nothing else of the application."""
    for path in (ROOT / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mrfbench"):
                assert node.module.startswith("mrfbench.models") or node.module in SHARED, (path, node.module)
    for shared in SHARED:
        source = (ROOT / "bench" / f"{shared.split('.')[-1]}.py").read_text()
        imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module}
        assert {m for m in imported if m.startswith("mrfbench")} <= set(SHARED), shared


def test_no_data_set_is_named_outside_its_spec():
    pattern = re.compile(r'"(copula|polymnist|mnist3)"|modality_shape\) == 3')
    for folder in ("bench", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            if "evaluators" not in path.parts:
                assert not pattern.search(path.read_text()), path
