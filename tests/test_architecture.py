"""The package's shape, checked over `ast`: layers import only downward, no import cycle, no private borrowing.

The layering is the README's "Architecture" map. Every ``import`` counts, also those inside
functions (a lazy import still couples the modules).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kerasml"

# Bottom to top; a module may import modules of its own layer or of a lower one.
LAYERS = (
    ("kerasml._backend", "kerasml._validation", "kerasml._version", "kerasml.preprocessing", "kerasml.distribution"),
    ("kerasml.losses",),
    ("kerasml.layers",),
    ("kerasml.models",),
    ("kerasml.hdml",),
    ("kerasml.data", "kerasml.evaluation"),
    ("kerasml.spec",),
    ("kerasml.experiment", "kerasml.reporting"),
    ("kerasml.cli",),
    ("kerasml", "kerasml.__main__"),
)
# Private modules every layer may use: the per-backend operations, the shared argument checks, the version.
SHARED_PRIVATE = ("kerasml._backend", "kerasml._validation", "kerasml._version")
MAX_MODULE_LINES = 600


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module):
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of LAYERS: add it to the map (and to the README)"
    return best[0]


def _imports(module, path):
    """``(imported module, imported name or None, line)`` for every kerasml import of ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("kerasml")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("kerasml"):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return found


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_modules_import_only_their_layer_or_below():
    upward = []
    for module, path in MODULES.items():
        own = _layer(module)
        for target, _, line in _imports(module, path):
            if _layer(target) > own:
                where = path.relative_to(PACKAGE.parent)
                upward.append(f"{where}:{line} imports {target} (layer {_layer(target)} > {own})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_private_names_from_other_packages():
    borrowed = []
    for module, path in MODULES.items():
        home = module.split(".")[:2]
        for target, name, line in _imports(module, path):
            if any(target == shared or target.startswith(shared + ".") for shared in SHARED_PRIVATE):
                continue
            if target.split(".")[:2] == home:
                continue
            private_module = any(part.startswith("_") and part != "__main__" for part in target.split(".")[1:])
            if private_module or (name is not None and name.startswith("_")):
                what = f"{target}.{name}" if name else target
                borrowed.append(f"{path.relative_to(PACKAGE.parent)}:{line} uses private {what}")
    assert not borrowed, "private names used across packages:\n" + "\n".join(borrowed)


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    graph = {module: set() for module in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in _imports(module, path):
            if target in MODULES and target != module:
                graph[module].add(target)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by concern"
