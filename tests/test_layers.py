"""The package's import graph: layers point one way, no cycles, no hidden imports.

``.importlinter`` names the layers (configs → CLI → trainers → prediction → evaluation →
importers → objectives → models → core → input_pipeline); these tests fail CI when a change
breaks them, and keep function-level imports to the optional or heavy dependencies that say why.
"""
import ast
import os
import subprocess
import sys

import grimp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("configs", "fakedet", "input_pipeline")


def test_layer_contract_holds():
  lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
  assert "0 broken" in out.stdout


def _cycle(graph) -> list:
  """One import cycle among the graph's modules (as a list of names), or []."""
  state, stack = {}, []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(graph.find_modules_directly_imported_by(m)):
      if state.get(n) == 1:
        return stack[stack.index(n):] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    stack.pop()
    state[m] = 2
    return []

  for module in sorted(graph.modules):
    if module not in state:
      found = visit(module)
      if found:
        return found
  return []


def test_no_import_cycle_between_any_two_modules():
  sys.path.insert(0, ROOT)
  graph = grimp.build_graph(*PACKAGES, cache_dir=None)
  assert not _cycle(graph), " -> ".join(_cycle(graph))


def _function_level_imports(path):
  tree = ast.parse(open(path).read(), path)
  lines = open(path).read().splitlines()
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          yield node.lineno, lines[node.lineno - 1]


@pytest.mark.parametrize("package", ["fakedet", "input_pipeline"])
def test_function_level_imports_say_why(package):
  """A function-level import hides a dependency from linters: allowed only for an optional or
  heavy dependency, with the reason on the same line or the line above."""
  bad = []
  for folder, _, files in os.walk(os.path.join(ROOT, package)):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      source = open(path).read().splitlines()
      for lineno, line in _function_level_imports(path):
        above = source[lineno - 2].strip() if lineno > 1 else ""
        reason = line.partition("#")[2].strip() or (above[1:].strip() if above.startswith("#")
                                                    else "")
        if not reason or reason.startswith("pylint"):
          bad.append(f"{os.path.relpath(path, ROOT)}:{lineno}: {line.strip()}")
  assert not bad, "function-level imports without a reason:\n" + "\n".join(bad)
