"""The layout DESIGN.md promises, checked on the source (no imports run).

Every import in robustfl_jax/ is read from the syntax tree, at module level
and inside functions alike, so a function-level import cannot hide a cycle or
a climb up the layers.
"""

import ast
import glob
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "robustfl_jax")

# Layers (DESIGN.md): a package may import its own layer's packages (without
# cycles) and the ones below, never the ones above.
LAYERS = {
    "registry": 0, "checkpoint": 0, "data": 0, "models": 0, "aggregators": 0,
    "attacks": 0, "scoring": 0,
    "fl": 1, "patchcore": 1, "defenses": 1, "adversarial": 1, "distributed": 1,
    "experiments": 2,
}


def _module_name(path):
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


MODULES = {_module_name(p): p
           for p in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)}


def _resolve(module, node):
  """Absolute names of the modules ``node`` (an import) loads."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  base = node.module or ""
  if node.level:
    parts = module.split(".")
    is_pkg = MODULES.get(module, "").endswith("__init__.py")
    parts = parts[:len(parts) - node.level + (1 if is_pkg else 0)]
    base = ".".join(parts + ([base] if base else []))
  out = []
  for alias in node.names:
    sub = f"{base}.{alias.name}"
    out.append(sub if sub in MODULES else base)
  return out


def _imports():
  graph = {}
  for module, path in MODULES.items():
    tree = ast.parse(open(path).read(), path)
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        targets.update(t for t in _resolve(module, node)
                       if t.startswith("robustfl_jax"))
    graph[module] = targets
  return graph


GRAPH = _imports()


def _package(module):
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def test_only_experiments_reads_a_config():
  offenders = []
  for module, path in MODULES.items():
    if _package(module) == "experiments":
      continue
    if re.search(r"ConfigDict|ml_collections", open(path).read()):
      offenders.append(module)
  assert not offenders, offenders


def test_layers_are_respected():
  climbs = []
  for module, targets in GRAPH.items():
    src = _package(module)
    for target in targets:
      dst = _package(target)
      if src in LAYERS and dst in LAYERS and LAYERS[dst] > LAYERS[src]:
        climbs.append(f"{module} -> {target}")
  assert not climbs, climbs


def test_the_engine_imports_no_defense_adversarial_or_experiment_code():
  bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if _package(m) == "fl"
         for t in ts if _package(t) in ("defenses", "adversarial", "experiments")]
  assert not bad, bad


def _find_cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt == node or nxt not in graph:
        continue
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if state.get(nxt) is None:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if state.get(node) is None:
      found = visit(node)
      if found:
        return found
  return None


def _without_own_package_init(graph):
  """Drops edges from a submodule to its own package's ``__init__`` (Python
  runs that first anyway); every other edge counts."""
  return {m: {t for t in ts if not (m.startswith(t + ".") and t != "robustfl_jax")}
          for m, ts in graph.items()}


def test_no_import_cycle_between_modules():
  cycle = _find_cycle(_without_own_package_init(GRAPH))
  assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_between_packages():
  packages = {}
  for module, targets in GRAPH.items():
    src = _package(module)
    packages.setdefault(src, set()).update(
        _package(t) for t in targets if _package(t) != src)
  cycle = _find_cycle(packages)
  assert cycle is None, " -> ".join(cycle)


def test_no_private_module_is_imported_across_packages():
  bad = []
  for module, targets in GRAPH.items():
    for target in targets:
      private = any(p.startswith("_") for p in target.split(".")[2:])
      if private and _package(target) != _package(module):
        bad.append(f"{module} -> {target}")
  assert not bad, bad


def test_the_cycle_check_can_fail():
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _find_cycle({"a": {"b"}, "b": set()}) is None


def _python_files(*folders):
  for folder in folders:
    yield from glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)


def test_no_process_state_changes():
  for path in _python_files("robustfl_jax"):
    assert "matplotlib.use(" not in open(path).read(), path
  for path in _python_files("robustfl_jax", "scripts", "configs"):
    assert not re.search(r"sys\.path\.(insert|append)", open(path).read()), path


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "scripts", "*.py"))),
                         ids=os.path.basename)
def test_scripts_are_thin(path):
  lines = open(path).read().splitlines()
  assert len(lines) <= 80, f"{path}: {len(lines)} lines"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))),
                         ids=os.path.basename)
def test_notebooks_do_not_shell_out_or_load_configs_by_hand(path):
  source = "\n".join("".join(c["source"]) for c in json.load(open(path))["cells"]
                     if c["cell_type"] == "code")
  for word in ("subprocess", "runpy", "sys.path", "os.system"):
    assert word not in source, f"{os.path.basename(path)} uses {word}"
