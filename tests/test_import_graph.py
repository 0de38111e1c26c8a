"""The import graph of the project's own modules, read from source with `ast` (nothing is imported).

Why: the packages form layers. `demo` is deployed alone (a Hugging Face Space with no
TensorFlow), `train` reuses demo's preprocessing and vocabulary, `export` needs a trained
Keras model, and `pipeline` and `bench` drive all of them. An import that points the wrong
way, a cycle, or TensorFlow reaching `demo` breaks that quietly (often only inside a function,
where nothing fails until that code path runs), so these tests read every import statement,
at any depth, and check the layering.

The checkers take the tree's root as an argument so that the self-tests at the bottom can
show each one failing on a small fake tree.
"""
from __future__ import annotations

import ast
import re
import tokenize
from collections import deque
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Lower rank = lower layer. A package may import its own modules and those of lower rank only;
# bench and pipeline share rank 3, so neither may import the other.
RANK = {"demo": 0, "train": 1, "export": 2, "pipeline": 3, "bench": 3}
PROJECT_PACKAGES = tuple(RANK)
# Scanned as importers only: scripts/ runs before the environment exists, so it is stdlib-only.
SCANNED_FOLDERS = (*PROJECT_PACKAGES, "scripts")

TENSORFLOW_FAMILY = ("tensorflow", "keras", "tf2onnx")
# Heavy or optional third-party modules whose function-level import must say why it is deferred.
WATCHED_THIRD_PARTY = (*TENSORFLOW_FAMILY, "gradio", "onnx", "onnxruntime")
LAZY_COMMENT = re.compile(r"\blazy\b", re.IGNORECASE)


@dataclass(frozen=True)
class ImportStatement:
    """One `import`/`from ... import` statement, with every module it names resolved to a dotted name."""

    path: Path  # relative to the root
    module: str  # the importing module
    line: int
    end_line: int
    in_function: bool
    targets: tuple[str, ...]
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.as_posix()}:{self.line}"


def top_level(module: str) -> str:
    return module.split(".", 1)[0]


def module_name(relative: Path) -> str:
    """`demo/vocab.py` -> `demo.vocab`; a package's `__init__.py` is the package; `__main__.py` stays."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> dict[str, Path]:
    """Every module under the scanned folders that exist, by dotted name (`pipeline/` may not exist yet)."""
    files: dict[str, Path] = {}
    for folder in SCANNED_FOLDERS:
        if (root / folder).is_dir():
            for path in sorted((root / folder).rglob("*.py")):
                files[module_name(path.relative_to(root))] = path
    return files


def _imports_with_context(node: ast.AST, in_function: bool = False):
    """Yield (import node, inside a function?) for the whole tree: `if`, `try`, classes, nested functions."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _imports_with_context(child, nested)


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a `from X import ...` reads from, with relative imports resolved against the file's package."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> tuple[str, ...]:
    """The modules a statement imports; `from demo import vocab` is `demo.vocab` when that module exists."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _from_base(node, module, is_package)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    return tuple(dict.fromkeys(names))


def collect_imports(root: Path = REPO_ROOT) -> list[ImportStatement]:
    """Every import statement of every scanned module, third-party ones included."""
    files = source_files(root)
    known = set(files)
    statements = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, in_function in _imports_with_context(tree):
            statements.append(
                ImportStatement(
                    path=path.relative_to(root),
                    module=module,
                    line=node.lineno,
                    end_line=node.end_lineno or node.lineno,
                    in_function=in_function,
                    targets=_targets(node, module, is_package, known),
                    text=ast.unparse(node),
                )
            )
    return statements


def project_edges(statements: list[ImportStatement]) -> list[tuple[ImportStatement, str]]:
    """(statement, target) for every import of a project module."""
    return [(s, target) for s in statements for target in s.targets if top_level(target) in PROJECT_PACKAGES]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: every component that contains a cycle (several modules, or one importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
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


def _shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first, within the component)."""
    start, members = component[0], set(component)
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph.get(node, ())):
            if successor == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if successor in members and successor not in parent:
                parent[successor] = node
                queue.append(successor)
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


def import_cycles(root: Path = REPO_ROOT) -> list[str]:
    """One line per cycle, `a -> b -> a`, then where each of its imports is."""
    edges = project_edges(collect_imports(root))
    graph: dict[str, set[str]] = {}
    first_seen: dict[tuple[str, str], str] = {}
    for statement, target in edges:
        graph.setdefault(statement.module, set()).add(target)
        first_seen.setdefault((statement.module, target), statement.where)
    report = []
    for component in _strongly_connected(graph):
        cycle = _shortest_cycle(graph, component)
        line = " -> ".join(cycle)
        if len(set(cycle)) < len(component):
            line += f"  (one of the cycles among: {', '.join(component)})"
        report.append(line)
        report += [f"    {first_seen[edge]}: {edge[0]} imports {edge[1]}" for edge in zip(cycle, cycle[1:])]
    return report


def edge_allowed(source: str, target: str) -> bool:
    """The dependency rule: own package, or a lower rank; scripts/ imports no project module at all."""
    importer, imported = top_level(source), top_level(target)
    if importer not in RANK:  # scripts/
        return False
    return importer == imported or RANK[imported] < RANK[importer]


def dependency_violations(root: Path = REPO_ROOT) -> list[str]:
    return [
        f"{statement.where}: {statement.module} imports {target}"
        for statement, target in project_edges(collect_imports(root))
        if not edge_allowed(statement.module, target)
    ]


def tensorflow_in_demo(root: Path = REPO_ROOT) -> list[str]:
    return [
        f"{s.where}: {s.text}"
        for s in collect_imports(root)
        if top_level(s.module) == "demo" and any(top_level(t) in TENSORFLOW_FAMILY for t in s.targets)
    ]


def _comments_by_line(path: Path) -> dict[int, str]:
    """Comment text by line number (tokenize, so a `#` inside a string is not a comment)."""
    with path.open("rb") as source:
        tokens = list(tokenize.tokenize(source.readline))
    return {token.start[0]: token.string for token in tokens if token.type == tokenize.COMMENT}


def _says_lazy(statement: ImportStatement, comments: dict[int, str], import_lines: set[int],
               blank_lines: set[int], comment_lines: set[int]) -> bool:
    """A `lazy` comment on the statement, on the line above it, or above the block of imports it belongs to.

    One comment says why for a block of consecutive imports (isort may put a blank line inside the block),
    and it may run over several comment lines.
    """
    lines = set(range(statement.line, statement.end_line + 1))
    line = statement.line - 1
    while line in import_lines or (line in blank_lines and line - 1 in import_lines) or line in comment_lines:
        lines.add(line)
        line -= 1
    lines.add(line)  # the line just above the block
    return any(LAZY_COMMENT.search(comments.get(number, "")) for number in lines)


def unexplained_function_imports(root: Path = REPO_ROOT) -> list[str]:
    """Function-level imports of project or watched third-party modules with no `lazy` comment."""
    watched = (*PROJECT_PACKAGES, *WATCHED_THIRD_PARTY)
    statements = collect_imports(root)
    import_lines: dict[Path, set[int]] = {}
    for s in statements:
        import_lines.setdefault(s.path, set()).update(range(s.line, s.end_line + 1))
    comments: dict[Path, dict[int, str]] = {}
    blanks: dict[Path, set[int]] = {}
    comment_only: dict[Path, set[int]] = {}
    report = []
    for s in statements:
        if not s.in_function or not any(top_level(t) in watched for t in s.targets):
            continue
        if s.path not in comments:
            comments[s.path] = _comments_by_line(root / s.path)
            text = (root / s.path).read_text(encoding="utf-8").splitlines()
            blanks[s.path] = {number for number, line in enumerate(text, start=1) if not line.strip()}
            comment_only[s.path] = {n for n, line in enumerate(text, start=1) if line.strip().startswith("#")}
        if not _says_lazy(s, comments[s.path], import_lines[s.path], blanks[s.path], comment_only[s.path]):
            report.append(f"{s.where}: {s.text}")
    return report


# --- the project's tree -------------------------------------------------------------------------


def test_no_import_cycles():
    """Function-level imports count too: a cycle hidden in a function still ties the modules together."""
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_follow_the_dependency_rule():
    """demo < train < export < pipeline, bench; each imports only itself and lower layers."""
    violations = dependency_violations()
    assert not violations, "imports against the dependency rule (ranks: {}):\n{}".format(RANK, "\n".join(violations))


def test_demo_never_imports_tensorflow():
    """demo/ is the Space's whole runtime: TensorFlow is not installed there."""
    offenders = tensorflow_in_demo()
    assert not offenders, "TensorFlow-family imports in demo/:\n" + "\n".join(offenders)


def test_function_level_imports_say_why():
    """A deferred import of a project or heavy module is a decision; `# lazy: <why>` records it."""
    offenders = unexplained_function_imports()
    assert not offenders, f"{len(offenders)} function-level imports without a `lazy` comment:\n" + "\n".join(offenders)


def test_the_scan_sees_the_project():
    """Guards the checkers against passing vacuously (a wrong root, or a folder renamed)."""
    modules = source_files(REPO_ROOT)
    assert {"demo", "demo.vocab", "train.model", "export.bundle", "bench.__main__"} <= set(modules)
    assert any(s.in_function for s in collect_imports(REPO_ROOT))


# --- self-tests: each checker fails on a fake tree ---------------------------------------------


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


FAKE_TREE = {
    "demo/__init__.py": "",
    "demo/a.py": "def load():\n    from demo import b\n",
    "demo/b.py": "import demo.a\n",
    "demo/c.py": "import os\nimport train.x\n",
    "demo/d.py": "from . import c\n\n\ndef go():\n    # lazy: only when asked\n    import gradio\n",
    "demo/e.py": "def f():\n    import keras  # lazy, and still forbidden here\n",
    "demo/g.py": "def block():\n    # lazy: one comment for the block\n    import gradio\n\n    import onnx\n\n\n"
                 "def later():\n    # lazy: not for an import after code\n    x = 1\n    import onnx\n",
    "train/__init__.py": "",
    "train/x.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import export.y\n",
    "export/__init__.py": "",
    "export/y.py": "try:\n    import tensorflow\nexcept ImportError:\n    pass\n",
    "scripts/tool.py": "def main():\n    from demo import c  # lazy\n",
}


def test_module_names_and_resolved_targets(tmp_path):
    root = _write_tree(tmp_path, FAKE_TREE)
    by_module = {}
    for s in collect_imports(root):
        by_module.setdefault(s.module, []).append(s)
    assert by_module["demo.a"][0].targets == ("demo.b",)  # `from demo import b`: the submodule
    assert by_module["demo.a"][0].in_function
    assert by_module["demo.d"][0].targets == ("demo.c",)  # relative import
    assert not by_module["train.x"][1].in_function  # under `if TYPE_CHECKING:` is top level
    assert not by_module["export.y"][0].in_function  # under `try:` is top level
    assert "scripts.tool" in by_module


def test_cycle_through_a_function_level_import_is_reported(tmp_path):
    cycles = import_cycles(_write_tree(tmp_path, FAKE_TREE))
    assert cycles[0] == "demo.a -> demo.b -> demo.a"
    assert "    demo/a.py:2: demo.a imports demo.b" in cycles
    assert len([line for line in cycles if not line.startswith(" ")]) == 1


def test_longer_cycle_and_self_import(tmp_path):
    root = _write_tree(
        tmp_path,
        {"train/p.py": "import train.q\n", "train/q.py": "import train.r\n", "train/r.py": "import train.p\n",
         "train/s.py": "import train.s\n"},
    )
    assert [line for line in import_cycles(root) if not line.startswith(" ")] == [
        "train.p -> train.q -> train.r -> train.p",
        "train.s -> train.s",
    ]


def test_wrong_direction_edges_are_reported(tmp_path):
    violations = dependency_violations(_write_tree(tmp_path, FAKE_TREE))
    assert violations == [
        "demo/c.py:2: demo.c imports train.x",
        "train/x.py:4: train.x imports export.y",
        "scripts/tool.py:2: scripts.tool imports demo.c",
    ]


def test_bench_and_pipeline_may_not_import_each_other():
    assert edge_allowed("bench.report", "export.bundle")
    assert edge_allowed("pipeline.run", "demo.vocab")
    assert not edge_allowed("bench.report", "pipeline.run")
    assert not edge_allowed("pipeline.run", "bench.timing")


def test_tensorflow_in_demo_is_reported(tmp_path):
    offenders = tensorflow_in_demo(_write_tree(tmp_path, FAKE_TREE))
    assert offenders == ["demo/e.py:2: import keras"]  # export/y.py's tensorflow is allowed


def test_function_level_import_without_lazy_comment_is_reported(tmp_path):
    offenders = unexplained_function_imports(_write_tree(tmp_path, FAKE_TREE))
    # demo/d.py (comment above), demo/e.py and scripts/tool.py (same line) say why; top-level imports are exempt
    assert offenders == ["demo/a.py:2: from demo import b", "demo/g.py:11: import onnx"]
