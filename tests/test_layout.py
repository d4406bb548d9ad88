"""The package's layout: which module may import which, and module sizes.

The rules (docs/architecture.md, "Module map"): library modules never
import `cli` (the binaries' helper) and define no flags; the report imports
nothing of the training stack; no module grows past ~600 lines, and the
binaries stay short. Each rule is checked on the real source, so a change that breaks one
fails here with the module and line named.
"""

import ast
import glob
import json
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, 'tf_memorization')
BINARIES = {'train', 'estimate', 'report', 'inspect_workdir', 'compare'}
TRAINING_STACK = {'tf_memorization.training', 'tf_memorization.runs',
                  'tf_memorization.models', 'tf_memorization.strategy',
                  'tf_memorization.experiments', 'tf_memorization.estimator',
                  'tf_memorization.estimate', 'tf_memorization.cli',
                  'tf_memorization.data', 'tf_memorization.configurables'}
# The modules, bottom layer first (docs/architecture.md, "Module map"): each
# imports (when imported) only modules before it.
LAYERS = (
    'errors', 'quiet', 'progress', 'scores', 'selection', 'views', 'planner',
    'masks', 'schedules',
    'strategy', 'datasets.sklearn_digits', 'datasets', 'npz_reader', 'storage', 'preparing',
    'records',
    'record_checks', 'loading', 'membership', 'membership_eval', 'proxies', 'published', 'published_join', 'config', 'leases', 'models', 'initializing', 'tfds_data',
    'data', 'folders', 'arrays', 'dynamics', 'inference', 'training', 'pretrained', 'runs',
    'sequential',
    'estimates', 'analyses', 'assessment', 'per_example', 'experiments.base', 'experiments.removal',
    'experiments.ablation', 'experiments.leave_one_out',
    'experiments.ratio_sweep', 'experiments', 'estimator', 'report_html',
    'report_figures', 'report_inputs', 'report_images', 'report',
    'configurables', 'cli', 'train', 'estimate', 'inspect_workdir',
    'compare')
MAX_LINES = 600
MAX_BINARY_LINES = {'estimate': 200, 'train': 200, 'inspect_workdir': 200}


def _modules():
  """{dotted name: path} of every module of the package."""
  found = {}
  for path in glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True):
    relative = os.path.relpath(path, REPO)[:-len('.py')]
    name = relative.replace(os.sep, '.')
    found[name.removesuffix('.__init__')] = path
  return found


def _top_level_imports(path):
  """(line, imported module) of the imports a module runs when imported:
  those outside functions and outside `if __name__ == '__main__':`."""
  tree = ast.parse(open(path).read(), path)
  found = []

  def visit(nodes):
    for node in nodes:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                           ast.ClassDef)):
        continue
      if isinstance(node, ast.If) and '__main__' in ast.unparse(node.test):
        continue
      if isinstance(node, ast.Import):
        found.extend((node.lineno, alias.name) for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        found.extend((node.lineno, f'{node.module}.{alias.name}')
                     for alias in node.names)
      for field in ('body', 'orelse', 'handlers', 'finalbody'):
        visit(getattr(node, field, []) or [])

  visit(tree.body)
  return found


def _package_imports(path):
  """(line, module) of the package modules a module imports when imported
  (`from tf_memorization import records` names the module records)."""
  modules = _modules()
  found = []
  for line, name in _top_level_imports(path):
    while name and name not in modules:
      name = name.rpartition('.')[0]
    if name and name != 'tf_memorization':
      found.append((line, name.removeprefix('tf_memorization.')))
  return found


def test_each_module_imports_only_the_layers_below_it():
  names = {name.removeprefix('tf_memorization.'): path
           for name, path in _modules().items() if name != 'tf_memorization'}
  assert sorted(names) == sorted(LAYERS), (
      'a module is missing from LAYERS (or LAYERS names one that is gone): '
      f'{sorted(set(names) ^ set(LAYERS))}')
  offenders = []
  for name, path in names.items():
    for line, imported in _package_imports(path):
      if LAYERS.index(imported) >= LAYERS.index(name):
        offenders.append(f'{name} line {line} imports {imported}, a layer at '
                         'or above its own')
  assert not offenders, offenders


def test_no_library_module_imports_cli():
  offenders = []
  for name, path in _modules().items():
    if name.rpartition('.')[2] in BINARIES:
      continue
    offenders += [f'{name} line {line}: {module}'
                  for line, module in _top_level_imports(path)
                  if module == 'tf_memorization.cli']
    source = open(path).read()
    if 'import cli' in source and name != 'tf_memorization.cli':
      offenders.append(f'{name}: imports cli inside a function')
  assert not offenders, offenders


def test_flags_are_defined_only_in_binaries():
  offenders = []
  for name, path in _modules().items():
    if name.rpartition('.')[2] in BINARIES:
      continue
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if (isinstance(node, ast.Attribute) and node.attr.startswith('DEFINE_')
          and ast.unparse(node.value) == 'flags'):
        offenders.append(f'{name} line {node.lineno}: flags.{node.attr}')
  assert not offenders, offenders


def test_no_module_is_over_the_size_limit():
  sizes = {name: len(open(path).read().splitlines())
           for name, path in _modules().items()}
  too_long = {name: lines for name, lines in sizes.items()
              if lines > MAX_BINARY_LINES.get(name.rpartition('.')[2],
                                              MAX_LINES)}
  assert not too_long, too_long


def test_the_report_imports_no_training_module():
  """Importing the report (a fresh process) loads none of the training
  stack, nor cli; so neither do the layers under it (records, loading,
  scores, estimates, storage), which it imports."""
  module = 'tf_memorization.report'
  code = (f'import sys, json, {module}; print(json.dumps(sorted('
          "m for m in sys.modules if m.startswith('tf_memorization'))))")
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                        capture_output=True, text=True, check=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
  assert {module, 'tf_memorization.loading', 'tf_memorization.estimates',
          'tf_memorization.scores'} <= loaded
  assert not loaded & TRAINING_STACK, sorted(loaded & TRAINING_STACK)


def test_the_layout_checks_see_a_violation(tmp_path):
  """The import scan finds an import of cli where one is, and skips one
  inside a function or the __main__ block (so the rules can fail)."""
  path = tmp_path / 'module.py'
  path.write_text('import os\nfrom tf_memorization import cli\n'
                  'from tf_memorization.experiments import base\n'
                  'def f():\n  from tf_memorization import runs\n'
                  "if __name__ == '__main__':\n"
                  '  from tf_memorization import estimate\n')
  assert _top_level_imports(str(path)) == [
      (1, 'os'), (2, 'tf_memorization.cli'),
      (3, 'tf_memorization.experiments.base')]
  assert _package_imports(str(path)) == [(2, 'cli'), (3, 'experiments.base')]


def _filters_first(path):
  """Whether module `path` runs quiet.filter_library_logs() under
  `if __name__ == '__main__':` before any statement that imports something
  other than the standard library or tf_memorization.quiet."""
  for node in ast.parse(open(path).read(), path).body:
    if isinstance(node, ast.If) and ast.unparse(node.test) == (
        "__name__ == '__main__'"):
      return any(ast.unparse(n) == 'quiet.filter_library_logs()'
                 for n in ast.walk(node))
    if isinstance(node, ast.ImportFrom) and node.module == 'tf_memorization':
      if [a.name for a in node.names] != ['quiet']:
        return False
    elif isinstance(node, ast.ImportFrom) or (
        isinstance(node, ast.Import)
        and any(a.name.partition('.')[0] not in sys.stdlib_module_names
                for a in node.names)):
      return False
  return False


def test_every_binary_filters_tensorflow_logs_before_loading_it():
  """TensorFlow's C++ log lines come while it loads: each binary starts
  the filter (quiet.py) first (tests/test_hostile_workdir.py runs one
  binary to show the lines are gone)."""
  late = [name for name in BINARIES
          if not _filters_first(os.path.join(PACKAGE, f'{name}.py'))]
  assert not late, late


def test_the_filter_check_sees_a_binary_that_loads_first(tmp_path):
  path = tmp_path / 'binary.py'
  path.write_text('import os\nfrom tf_memorization import quiet\n\n'
                  "if __name__ == '__main__':\n"
                  '  quiet.filter_library_logs()\n'
                  'import tensorflow\n')
  assert _filters_first(str(path))
  path.write_text('import os\nimport tensorflow\n'
                  'from tf_memorization import quiet\n\n'
                  "if __name__ == '__main__':\n"
                  '  quiet.filter_library_logs()\n')
  assert not _filters_first(str(path))
