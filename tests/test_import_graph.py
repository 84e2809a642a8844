"""No import cycle between refseg_tf modules (`docs/design.md`: lower modules never import
higher ones).

The module-level imports of every `refseg_tf` file are read with `ast` (nothing is run). An
import inside a function runs on first use, after every module has loaded, so it cannot close
a cycle at import time and is not counted. `from package import name` counts as an import of
`package.name` when that is a module, else of `package`; a module's own parent packages are not
edges (Python initialises them first, whatever the module imports).
"""

import ast
import os

import refseg_tf

ROOT = os.path.dirname(refseg_tf.__file__)


def _module_files():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")]
                module = relative.replace(os.sep, ".")
                if module.endswith(".__init__"):
                    module = module[: -len(".__init__")]
                yield module, path


def _resolve(module, is_package, node):
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(function_level=False):
    """module -> set of refseg_tf modules it imports at module level (and, with
    `function_level`, inside functions too)."""
    files = dict(_module_files())
    graph = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        targets = set()
        nodes = ast.walk(tree) if function_level else tree.body  # see the module docstring
        for node in nodes:
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_package, node)
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.add(child if child in files else source)
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        graph[module] = {t for t in targets if t in files and t != module and t not in parents}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first = last), or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def reachable(graph, roots, with_parents=False):
    """The modules `roots` reach in `graph` (`roots` included); `with_parents`: a module's
    parent packages too (Python initialises them when it imports the module)."""
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if with_parents:
            todo.extend(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))
        todo.extend(graph.get(module, ()))
    return seen


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_refseg_tf_modules_import_no_cycle():
    graph = import_graph()
    assert "refseg_tf.training.trainer" in graph and len(graph) > 80
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_commands_modules_stay_apart():
    """`inference` does not import the trainer, `webdemo` not the `predict` command, and the
    two synthetic styles share the refer-format writer, not each other (at any level)."""
    graph = import_graph(function_level=True)
    assert "refseg_tf.training.trainer" not in graph["refseg_tf.inference"]
    assert "refseg_tf.predict" not in reachable(graph, ["refseg_tf.webdemo"])
    shapes, shapes_v2 = "refseg_tf.synthetic_data.shapes", "refseg_tf.synthetic_data.shapes_v2"
    assert not (shapes in graph[shapes_v2] and shapes_v2 in graph[shapes])


def test_the_models_and_the_experiment_registry_do_not_import_training():
    """The layering refseg_tf.experiment <- models/<family>/experiments.py <- training, read
    from the source; tests/test_experiments.py checks it in a fresh interpreter (`-m slow`)."""
    graph = import_graph()
    loaded = reachable(graph, ["refseg_tf.models", "refseg_tf.experiment"], with_parents=True)
    assert "refseg_tf.models.lts.experiments" in loaded  # the families register their rows
    assert sorted(m for m in loaded if m.startswith("refseg_tf.training")) == []
    # The check can fail: the trainer's own imports reach the rest of training.
    assert "refseg_tf.training.config" in reachable(graph, ["refseg_tf.training.trainer"])
