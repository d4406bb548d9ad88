"""The package's layout: stages, the rules between them, module sizes.

The package is a floor (`core/`) and stages over it, each a folder
(docs/architecture.md, "Stages"); the binaries sit at the top. A stage may
import only the stages STAGES gives it, at import time or inside a
function alike; no module imports a module that imports it back (no
circles, also through function-level imports); only `reporting/` draws
(imports matplotlib); `stats/` is numpy and scipy only; only the binaries
import `cli` or define flags. Each rule is checked on the real source, so
a change that breaks one fails here with the module and line named.
"""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, 'tf_memorization')
BINARIES = ('train', 'estimate', 'report', 'inspect_workdir', 'compare',
            'import_trials')
# The top level: the binaries and what only they import.
TOP = BINARIES + ('cli', 'configurables', 'console')
# Each stage and the stages it may import (besides itself).
STAGES = {
    'core': (),
    'stats': (),
    'workdir': ('core', 'stats'),
    'data': ('core',),
    'published': ('core', 'stats', 'workdir', 'reporting'),
    'importing': ('core', 'stats', 'workdir'),
    'reporting': ('core', 'stats', 'workdir', 'data'),
    'training': ('core', 'stats', 'workdir', 'data'),
    'experiments': ('core', 'stats', 'workdir', 'data', 'training',
                    'reporting'),
    'estimation': ('core', 'stats', 'workdir', 'data', 'training',
                   'experiments', 'reporting'),
}
# Outside libraries a stage may not import (anywhere in its modules).
FORBIDDEN = {
    'stats': ('tensorflow', 'keras', 'matplotlib', 'PIL',
              'tensorflow_datasets', 'absl'),
    'core': ('keras', 'matplotlib', 'tensorflow_datasets', 'PIL'),
    'workdir': ('matplotlib', 'PIL'),
    'published': ('keras', 'matplotlib', 'PIL'),
    'importing': ('keras', 'matplotlib', 'PIL', 'tensorflow_datasets'),
}
DRAWS = ('matplotlib',)  # only reporting/ imports these
MAX_LINES = 600
MAX_BINARY_LINES = 200


def _modules():
  """{dotted name without the package prefix: path} of every module."""
  found = {}
  for path in glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True):
    relative = os.path.relpath(path, PACKAGE)[:-len('.py')]
    name = relative.replace(os.sep, '.').removesuffix('__init__').rstrip('.')
    found[name] = path
  return found


def _stage(name):
  """The stage of module `name` ('' for the package's own __init__)."""
  head = name.partition('.')[0]
  return head if head in STAGES else ('top' if name else '')


def _imports(path):
  """(line, imported module) of every import in a module, those inside
  functions and classes too."""
  found = []
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found.extend((node.lineno, a.name) for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.extend((node.lineno, f'{node.module}.{a.name}')
                   for a in node.names)
  return sorted(found)


def _package_imports(path, modules=None):
  """(line, module) of the package modules a module imports, anywhere in
  it (`from tf_memorization.workdir import records` names
  workdir.records)."""
  modules = _modules() if modules is None else modules
  found = []
  for line, name in _imports(path):
    if not name.startswith('tf_memorization'):
      continue
    name = name.removeprefix('tf_memorization').lstrip('.')
    while name and name not in modules:
      name = name.rpartition('.')[0]
    if name:
      found.append((line, name))
  return found


def _offenders(modules):
  """Every import that breaks a rule, as 'module line N: why'."""
  offenders = []
  for name, path in sorted(modules.items()):
    stage = _stage(name)
    for line, imported in _package_imports(path, modules):
      other = _stage(imported)
      if imported in TOP and imported != name and stage != 'top':
        offenders.append(f'{name} line {line}: imports the top-level '
                         f'{imported} (only the binaries may)')
      elif stage in STAGES and other not in (stage, '') and (
          other not in STAGES[stage]):
        offenders.append(f'{name} line {line}: {stage}/ imports {imported} '
                         f'({other}/), not among {STAGES[stage] or "none"}')
    for line, imported in _imports(path):
      top = imported.partition('.')[0]
      if top in FORBIDDEN.get(stage, ()):
        offenders.append(f'{name} line {line}: {stage}/ imports {top}')
      elif top in DRAWS and stage != 'reporting':
        offenders.append(f'{name} line {line}: imports {top}; only '
                         'reporting/ draws')
  return offenders


def test_every_module_is_in_a_stage_or_at_the_top():
  strays = [name for name in _modules() if name and '.' not in name
            and name not in TOP and name not in STAGES]
  assert not strays, (f'{strays}: put a module in a stage folder (STAGES), '
                      'or, for a binary, in BINARIES')


def test_stages_import_only_the_stages_below_them():
  offenders = _offenders(_modules())
  assert not offenders, offenders


def _circles(modules):
  """The import circles among the package's modules (every import)."""
  graph = {name: {m for _, m in _package_imports(path, modules)} - {name}
           for name, path in modules.items()}
  circles, state = [], {}

  def visit(name, trail):
    state[name] = 'open'
    for other in sorted(graph.get(name, ())):
      if state.get(other) == 'open':
        circles.append(trail[trail.index(other):] + [other])
      elif other not in state:
        visit(other, trail + [other])
    state[name] = 'done'

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
  return circles


def test_no_import_circles():
  modules = {name: path for name, path in _modules().items()
             if name and _stage(name) != 'top'}
  # A package's __init__ imports its modules, which import it as a parent:
  # that is no circle, so the packages themselves are left out.
  modules = {name: path for name, path in modules.items()
             if not path.endswith('__init__.py')}
  circles = _circles(modules)
  assert not circles, circles


def test_the_rules_see_violations(tmp_path):
  """Each rule finds a violation where one is, inside a function too (so
  the rules can fail)."""
  stats = tmp_path / 'stats'
  stats.mkdir()
  (stats / 'bad.py').write_text(
      'import numpy\n'
      'def f():\n'
      '  from tf_memorization.training import runs\n'
      '  import matplotlib\n')
  (tmp_path / 'cli.py').write_text('')
  core = tmp_path / 'core'
  core.mkdir()
  (core / 'worse.py').write_text('from tf_memorization import cli\n')
  modules = {'stats.bad': str(stats / 'bad.py'),
             'core.worse': str(core / 'worse.py'),
             'training.runs': str(tmp_path / 'cli.py'),
             'cli': str(tmp_path / 'cli.py')}
  offenders = _offenders(modules)
  assert any(o.startswith('stats.bad line 3: stats/ imports training.runs')
             for o in offenders), offenders
  assert any(o.startswith('stats.bad line 4: stats/ imports matplotlib')
             for o in offenders), offenders
  assert any(o.startswith('core.worse line 1: imports the top-level cli')
             for o in offenders), offenders
  a, b = tmp_path / 'a.py', tmp_path / 'b.py'
  a.write_text('from tf_memorization.workdir import b\n')
  b.write_text('def f():\n  from tf_memorization.workdir import a\n')
  assert _circles({'workdir.a': str(a), 'workdir.b': str(b)}) == [
      ['workdir.a', 'workdir.b', 'workdir.a']]


def test_flags_are_defined_only_in_binaries():
  offenders = []
  for name, path in _modules().items():
    if name in BINARIES:
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
              if lines > (MAX_BINARY_LINES if name in BINARIES else MAX_LINES)}
  assert not too_long, too_long


@pytest.mark.slow
def test_what_the_binaries_load_at_import():
  """In fresh processes: the report loads none of the training stack,
  nor cli; the inspect and train binaries read the planner's settings
  without the estimate's pipeline, the experiments or the report."""
  code = ('import importlib, sys, json\n'
          'out = {}\n'
          'for name in sys.argv[1:]:\n'
          '  before = set(sys.modules)\n'
          '  importlib.import_module(name)\n'
          '  out[name] = sorted(m for m in sys.modules if m not in before)\n'
          'print(json.dumps(out))\n')
  proc = subprocess.run(
      [sys.executable, '-c', code, 'tf_memorization.reporting.page'],
      cwd=REPO, capture_output=True, text=True, check=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  loaded = set(json.loads(proc.stdout.strip().splitlines()[-1])[
      'tf_memorization.reporting.page'])
  ours = {m for m in loaded if m.startswith('tf_memorization.')}
  assert {'tf_memorization.workdir.estimate_inputs',
          'tf_memorization.workdir.estimates'} <= ours
  stack = {m for m in ours if _stage(m.split('.', 1)[1]) in (
      'training', 'experiments', 'estimation', 'data', 'top')}
  assert not stack, sorted(stack)
  proc = subprocess.run(
      [sys.executable, '-c', code, 'tf_memorization.inspect_workdir',
       'tf_memorization.train'],
      cwd=REPO, capture_output=True, text=True, check=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  loaded = set(found['tf_memorization.inspect_workdir'])
  assert 'tf_memorization.estimation.settings' in loaded
  loaded |= set(found['tf_memorization.train'])
  assert not {m for m in loaded if m.startswith((
      'tf_memorization.estimation.pipeline', 'tf_memorization.experiments',
      'tf_memorization.reporting'))}, sorted(loaded)


def _filters_first(path):
  """Whether module `path` runs quiet.filter_library_logs() under
  `if __name__ == '__main__':` before any statement that imports something
  other than the standard library or the quiet module."""
  for node in ast.parse(open(path).read(), path).body:
    if isinstance(node, ast.If) and ast.unparse(node.test) == (
        "__name__ == '__main__'"):
      return any(ast.unparse(n) == 'quiet.filter_library_logs()'
                 for n in ast.walk(node))
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module.startswith('tf_memorization')):
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
  the filter (core/quiet.py) first (tests/workdir/test_hostile_workdir.py runs one
  binary to show the lines are gone)."""
  late = [name for name in BINARIES
          if not _filters_first(os.path.join(PACKAGE, f'{name}.py'))]
  assert not late, late


def test_the_filter_check_sees_a_binary_that_loads_first(tmp_path):
  path = tmp_path / 'binary.py'
  path.write_text('import os\nfrom tf_memorization.core import quiet\n\n'
                  "if __name__ == '__main__':\n"
                  '  quiet.filter_library_logs()\n'
                  'import tensorflow\n')
  assert _filters_first(str(path))
  path.write_text('import os\nimport tensorflow\n'
                  'from tf_memorization.core import quiet\n\n'
                  "if __name__ == '__main__':\n"
                  '  quiet.filter_library_logs()\n')
  assert not _filters_first(str(path))
