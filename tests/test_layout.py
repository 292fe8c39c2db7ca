"""The shape of the code (docs/design.md, "Layout"): packages by job whose imports point one way,
small modules, thin entry points. ``python tests/test_layout.py`` prints the module graph."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower layers never import higher ones; a module may import its own layer and those below.
LAYERS = (
    ("lightning_inv", "lightning_inv.allocator", "lightning_inv.files"),
    ("lightning_inv.protocols",),
    ("lightning_inv.models",),
    ("lightning_inv.data",),
    ("lightning_inv.measuring",),
    ("lightning_inv.reporting",),
    ("lightning_inv.studies", "callbacks"),
    ("lightning_inv.cli", "lightning_inv.report", "lightning_inv.dashboard"),
    ("evaluate", "train"),
)
MAX_MODULE_LINES = 500
MAX_ENTRY_LINES = 250


def modules() -> dict[str, Path]:
    """Every module of the project by dotted name."""
    found = {}
    for path in [
        *ROOT.glob("lightning_inv/**/*.py"),
        *ROOT.glob("callbacks/*.py"),
        ROOT / "evaluate.py",
        ROOT / "train.py",
    ]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def layer(name: str) -> int:
    """The layer of a module: the longest matching prefix wins."""
    best, depth = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = number, len(prefix)
    return best


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (at run time: ``TYPE_CHECKING`` blocks excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {
        m for m in found if m.split(".")[0] in ("lightning_inv", "callbacks", "evaluate", "train")
    }


def test_imports_point_from_higher_layers_to_lower_ones():
    """Catches a measuring module importing reporting, a protocol importing the statistics (a
    preset computing its contrast), a library module importing the CLI."""
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in modules().items()
        for target in imports(path)
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_modules_are_small_and_the_entry_points_thin():
    too_long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text().splitlines()))
        > (MAX_ENTRY_LINES if name in ("evaluate", "train") else MAX_MODULE_LINES)
    }
    assert too_long == {}


def test_no_argparse_namespace_below_the_command_line():
    """Settings are unpacked once at the edge into a typed config; a library function never
    takes the parsed flags (catches ``args.x`` travelling through the measuring code)."""
    leaked = [
        name
        for name, path in modules().items()
        if layer(name) < layer("lightning_inv.cli")
        and not name.startswith("lightning_inv.studies")  # their own ``python -m`` commands
        and "Namespace" in path.read_text()
    ]
    assert leaked == []


def graph() -> str:
    """One line per module: its layer, its lines and what it imports from the project."""
    rows = []
    for name, path in sorted(modules().items(), key=lambda item: (layer(item[0]), item[0])):
        targets = sorted(t.removeprefix("lightning_inv.") for t in imports(path))
        lines = len(path.read_text().splitlines())
        rows.append(f"{layer(name)} {name:45s} {lines:4d}  -> {', '.join(targets)}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(print(graph()))
