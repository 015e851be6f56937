"""The package's house rules, checked on the source with ``ast`` (no imports):

- argparse only in ``box2seg/commands/`` and ``box2seg/cli.py`` (as detectron2 keeps it in engine/defaults.py);
- imports at the top of modules, except the few on ``FUNCTION_LOCAL_IMPORTS`` below, each with its reason;
- no import cycles among box2seg's modules, and no import that runs back up the layers of the data flow.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "box2seg"

# (module, imported module) -> why the import cannot be at the top of the file.
_AFTER_FIXES = "compat patches detectron2 / fvcore: they may only be imported once the fixes before them are in"
_TIMM = "timm costs ~0.6 s and every box2seg command (--help too) imports the backbone module to register it"
FUNCTION_LOCAL_IMPORTS = {
    ("box2seg.compat", "fvcore.common"): _AFTER_FIXES,
    ("box2seg.compat", "detectron2.engine"): _AFTER_FIXES,
    ("box2seg.compat", "detectron2.utils"): _AFTER_FIXES,
    ("box2seg.compat", "detectron2.evaluation"): _AFTER_FIXES,
    ("box2seg.modeling.backbone.efficientnet_lite", "timm"): _TIMM,
    ("box2seg.modeling.backbone.efficientnet_lite", "timm.layers"): _TIMM,
    ("box2seg.distributed", ".ray_engine"): "ray (the optional extra) costs ~1 s at import and must be imported "
                                            "after loopback.prepare_ray_import chose its mode from --address",
}

# Lower number = lower layer. A module may import modules of its own layer or below, never above.
LAYERS = [
    ("box2seg.compat", 0),
    ("box2seg.structures", 0),
    ("box2seg.config", 0),
    ("box2seg.data", 1),
    ("box2seg.utils", 1),
    ("box2seg.modeling", 2),
    ("box2seg.evaluation", 3),
    ("box2seg.visualize", 4),
    ("box2seg.predict", 5),
    ("box2seg.export", 5),
    ("box2seg.distributed", 5),
    ("box2seg.engine", 5),
    ("box2seg.maskrcnn", 5),
    ("box2seg.commands", 6),
    ("box2seg.cli", 7),
]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, path.name == "__init__.py"


MODULES = {name: (path, is_pkg) for name, path, is_pkg in _modules()}


def _resolve(module, is_pkg, node):
    """Absolute box2seg module names an import statement refers to (modules only, not attributes)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("box2seg")]
    base = module if is_pkg else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    target = (base + "." + node.module if node.module else base) if node.level else node.module
    if not target or not target.startswith("box2seg"):
        return []
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or [target]


def _imports(name):
    path, is_pkg = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    top, local = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    local.append(sub)
    local = list({id(n): n for n in local}.values())  # nested functions are walked twice
    local_ids = {id(n) for n in local}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in local_ids:
            top.append(node)
    return tree, top, local, is_pkg


def _layer(name):
    best = None
    for prefix, layer in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def test_argparse_only_in_commands():
    offenders = []
    for name in MODULES:
        if name.startswith("box2seg.commands") or name == "box2seg.cli":
            continue
        _, top, local, _ = _imports(name)
        for node in top + local:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] == "argparse" for m in mods):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"argparse outside box2seg/commands and cli.py: {offenders}"


def test_imports_at_top_of_modules():
    offenders = []
    for name in MODULES:
        _, _, local, is_pkg = _imports(name)
        for node in local:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                "." * node.level + (node.module or "")]
            for m in mods:
                if (name, m) not in FUNCTION_LOCAL_IMPORTS:
                    offenders.append(f"{name}:{node.lineno} imports {m}")
    assert not offenders, "function-local imports not on the allow-list:\n" + "\n".join(offenders)


def _graph():
    graph = {}
    for name in MODULES:
        _, top, local, is_pkg = _imports(name)
        edges = set()
        for node in top + local:  # a function-local import closes a circle all the same
            for target in _resolve(name, is_pkg, node):
                # The root package only applies compat; every entry point imports it first.
                if target != "box2seg" and target != name and target in MODULES:
                    edges.add(target)
        graph[name] = edges
    return graph


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_imports_up_the_layers():
    offenders = []
    for name, targets in _graph().items():
        own = _layer(name)
        for target in targets:
            if own is not None and _layer(target) is not None and _layer(target) > own:
                offenders.append(f"{name} (layer {own}) imports {target} (layer {_layer(target)})")
    assert not offenders, "imports running back up the layers:\n" + "\n".join(offenders)


def test_every_module_is_layered():
    assert len(MODULES) > 20 and "box2seg.cli" in MODULES, f"walked the wrong folder: {PACKAGE}"
    unlayered = [m for m in MODULES if m != "box2seg" and _layer(m) is None]
    assert not unlayered, f"modules without a layer in LAYERS: {unlayered}"
