"""The package's shape, checked: imports run one way, modules stay short and say what they own,
and ideas live in folders.

    python scripts/check_structure.py [PACKAGE_DIR]

Exits 1, listing every problem, when a module imports (directly or through others) a
module that imports it back, when a module is longer than MAX_LINES, when one does not
open with a docstring, or when more than MAX_LOOSE modules stand at the package's top
(beside its ``__init__``): those are the project's face, each other idea has a folder.
Imports under ``if TYPE_CHECKING:`` do not count: they never run.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

# A module holds one idea, read top to bottom: the longest that still reads so are about this.
MAX_LINES = 400
MAX_LOOSE = 10


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` (at ``path``) imports when it runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b`` imports the module a.b when there is one, else a.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        found.update(target for target in targets if target in modules and target != name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm),
    and modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems(root: Path) -> list[str]:
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {name: imports_of(path, name, set(paths)) for name, path in paths.items()}
    found = [f"import cycle: {' <-> '.join(cycle)}" for cycle in cycles(graph)]
    for name, path in paths.items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_LINES:
            found.append(f"{path}: {lines} lines, more than {MAX_LINES}")
        if ast.get_docstring(ast.parse(text)) is None:
            found.append(f"{path}: no docstring saying what {name} owns")
    loose = sorted(path.name for path in root.glob("*.py") if path.name != "__init__.py")
    if len(loose) > MAX_LOOSE:
        found.append(
            f"{root}: {len(loose)} modules at the top, more than {MAX_LOOSE}: {', '.join(loose)}"
        )
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "ingest").resolve()
    found = problems(root)
    for problem in found:
        print(f"check_structure: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
