"""The packages are layers: each module imports only from its own layer and the layers below.

    1. fds_tune   (method core, problems, the FDS learner and its Ray shell)
    2. baselines  (other methods, through fds_tune's public names only)
    3. analysis   (results to frames, curves, tables, plots: neither baselines nor experiments)
    4. experiments (the comparison, its CLI, the benchmark scripts: on top of all)

and no module imports an underscore name (or an underscore module) from another module.
Every import statement counts, those inside functions and relative ones too.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("fds_tune", "baselines", "analysis", "experiments")  # lowest first


class Violation(NamedTuple):
    module: str
    line: int
    statement: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module} line {self.line}: `{self.statement}` {self.rule}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a (relative) ``from ... import`` names."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(base) - 1:
        return ""  # beyond the top package: Python fails on it anyway
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def check_imports(source: str, module: str, is_package: bool = False) -> list[Violation]:
    """Layer and privacy violations of one module's source (``module``: its dotted name)."""
    own = module.split(".")[0]
    violations: list[Violation] = []
    aliases: dict[str, str] = {}  # local name -> project module it is bound to (for `alias._name` uses)

    def check_target(node: ast.AST, target: str, statement: str) -> None:
        parts = target.split(".")
        if parts[0] not in LAYERS:
            return
        if LAYERS.index(parts[0]) > LAYERS.index(own):
            violations.append(Violation(module, node.lineno, statement, f"imports from {parts[0]}, a layer above {own}"))
        if parts[0] != own and any(_is_private(p) for p in parts[1:]):
            violations.append(Violation(module, node.lineno, statement, f"imports a private module of {parts[0]}"))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                statement = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                check_target(node, alias.name, statement)
                if alias.name.split(".")[0] in LAYERS:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            names = ", ".join(a.name for a in node.names)
            statement = f"from {'.' * node.level}{node.module or ''} import {names}"
            check_target(node, target, statement)
            if target.split(".")[0] in LAYERS:
                for alias in node.names:
                    if _is_private(alias.name):
                        violations.append(Violation(module, node.lineno, statement, f"imports the underscore name {alias.name} from {target}"))
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
    for node in ast.walk(ast.parse(source)):  # `config._number(...)` after `from fds_tune import config`
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases and aliases[root.id] != module:
                violations.append(Violation(module, node.lineno, ast.unparse(node), f"uses the underscore name {node.attr} of {aliases[root.id]}"))
    return violations


def project_modules() -> list[tuple[Path, str, bool]]:
    """(path, dotted name, is a package) of every module of the four packages."""
    out = []
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            out.append((path, ".".join(parts[:-1] if is_package else parts), is_package))
    return out


def test_every_package_has_modules():
    found = {name.split(".")[0] for _, name, _ in project_modules()}
    assert found == set(LAYERS)


def test_imports_follow_the_layers_and_leave_underscore_names_alone():
    violations = [v for path, name, is_package in project_modules() for v in check_imports(path.read_text(), name, is_package)]
    assert not violations, "layer or privacy violations:\n" + "\n".join(f"  {v}" for v in violations)


# ---- the checker itself -------------------------------------------------------------------


BAD = '''
import fds_tune._secret
from analysis import plots
from fds_tune.config import _number, fds_config
from fds_tune import config as c


def late():
    from experiments.compare import compare
    from .schedule_run import _load
    c._per_kind(lr=1)
'''


def test_the_checker_flags_a_bad_module():
    found = {(v.line, v.rule) for v in check_imports(BAD, "baselines.bad")}
    assert found == {
        (2, "imports a private module of fds_tune"),
        (3, "imports from analysis, a layer above baselines"),
        (4, "imports the underscore name _number from fds_tune.config"),
        (9, "imports from experiments, a layer above baselines"),
        (10, "imports the underscore name _load from baselines.schedule_run"),  # relative, within its package
        (11, "uses the underscore name _per_kind of fds_tune.config"),
    }
    assert "baselines.bad line 4: `from fds_tune.config import _number, fds_config` imports the underscore name" in str(
        check_imports(BAD, "baselines.bad")[2]
    )


@pytest.mark.parametrize(
    "source, module, is_package",
    [
        ("from fds_tune import PRESETS\nimport fds_tune.results\nfrom .space import SpaceConfig\n", "baselines.registry", False),
        ("from . import registry\nfrom ._helpers import x\n", "baselines", True),  # its own private module
        ("import analysis\nfrom baselines.greedy import SHARED_KEYS\nfrom fds_tune import __version__\n", "experiments.compare", False),
        ("from .loaders import RUN_SECONDS\nfrom fds_tune.results import METHODS\n", "analysis.curves", False),
        ("from __future__ import annotations\nimport torch\nfrom torch import _C\n", "fds_tune.engine", False),
    ],
)
def test_the_checker_passes_allowed_imports(source, module, is_package):
    assert check_imports(source, module, is_package) == []


def test_relative_imports_resolve_against_the_package():
    assert _resolve("fds_tune.engine", False, 1, "config") == "fds_tune.config"
    assert _resolve("baselines", True, 1, "registry") == "baselines.registry"
    assert _resolve("fds_tune.sub.mod", False, 2, "config") == "fds_tune.config"
    assert _resolve("experiments.compare", False, 2, "analysis") == ""  # beyond the top package (Python refuses it too)
