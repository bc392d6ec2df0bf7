"""The interfaces reach storage only through the service layer: an import-graph check over their source.

``dashboard/`` and ``api/`` may use the engine's selectors (reads), services
(writes), documents, errors and listing types; never the per-process
storage (``get_storage``), the manager, an adapter, the lifecycle or the
ORM's records. Type-only imports (under ``if TYPE_CHECKING:``) reach nothing
at run time and are not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTERFACES = ("dashboard", "api")
ALLOWED = (
    "autoplay_storage.selectors",
    "autoplay_storage.services",
    "autoplay_storage.summary_runs",
    "autoplay_storage.user_adoption_state",
    "autoplay_storage.errors",
    "autoplay_storage.browse",
    # Applied by the interfaces around every read and write: who may see a product, and the record of who did.
    "autoplay_storage.access",
    "autoplay_storage.audit",
    # Pure rules, no storage behind them: the wire JSON codec and the id rules.
    "autoplay_storage.codec",
    "autoplay_storage.ids",
    # Pure rules: the state edits both interfaces send to services.patch_state, and the session diff.
    "autoplay_storage.state_ops",
    "autoplay_storage.diff",
    # The support tooling's service layer (staff edits, summary review, rebuilds, diffs of stored
    # sessions): reads and writes over the selectors and services, like summary_runs.
    "autoplay_storage.support",
    # Django plumbing, no storage behind it: one thread that keeps its database connection for the
    # small ORM calls made per request (the audit's writes, the rate limiter's checks).
    "autoplay_storage.kept_connection",
)
FORBIDDEN_NAMES = {"get_storage"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, but for the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def _module_of(package: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def violations(source: str, package: str) -> list[str]:
    """What in ``source`` (a module of ``package``) reaches storage other than through the service layer."""
    found = []
    for node in _runtime_nodes(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _module_of(package, node)
            modules = [f"{module}.{alias.name}" if module == "autoplay_storage" else module for alias in node.names]
            found += [f"imports {alias.name}" for alias in node.names if alias.name in FORBIDDEN_NAMES]
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            found.append(f"uses .{node.attr}")
        for module in modules:
            if module.split(".")[0] != "autoplay_storage":
                continue
            if not any(module == ok or module.startswith(ok + ".") for ok in ALLOWED):
                found.append(f"imports {module}")
    return sorted(set(found))


def _sources() -> list[Path]:
    return sorted(p for name in INTERFACES for p in (ROOT / name).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_interfaces_reach_storage_only_through_selectors_and_services(path: Path):
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    assert violations(path.read_text(), package) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from autoplay_storage.runtime import get_storage",
            ["imports autoplay_storage.runtime", "imports get_storage"],
        ),
        ("import autoplay_storage.adapters.redis", ["imports autoplay_storage.adapters.redis"]),
        ("from autoplay_storage import manager, selectors", ["imports autoplay_storage.manager"]),
        ("from autoplay_storage.models import UserStateRecord", ["imports autoplay_storage.models"]),
        (
            "import autoplay_storage.runtime as r\nr.get_storage()",
            ["imports autoplay_storage.runtime", "uses .get_storage"],
        ),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from autoplay_storage.models import SummaryRun", []),
        ("from autoplay_storage.selectors import get_state\nfrom autoplay_storage import services", []),
    ],
)
def test_the_check_finds_what_it_must(source, expected):
    assert violations(source, "dashboard") == expected
