"""The gin config: parsing it strictly, and reading a workdir's copy as data.

Every gin configurable of the package is registered by importing
`configurables`, which the binaries do; this module only handles config
text:

  * parse_gin: files and bindings, typos are errors (a workdir's
    operative_config.gin is checked to hold bindings only, first);
  * LOCATION_BINDINGS: bindings that choose paths, which only the caller's
    own flags and gin files may set (without_locations strips them from a
    workdir's copy; check_bindings_only refuses them there);
  * not_fingerprinted / is_fingerprinted: which bindings change what a
    trial computes (runs.config_fingerprint hashes only those); each module
    declares its own configurables that do not.
"""

import importlib
import io
import os
import re
import sys

import gin
from gin import config_parser
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage

# Bindings that choose where files are read or written. Only the caller's
# flags and gin files may set them: a workdir's config is written without
# them and refused when it holds one, so that a shared workdir cannot make a
# binary write, delete or build a dataset outside it.
LOCATION_BINDINGS = ('load_dataset.data_dir', 'Estimator.report_dir')


def _binding_name(statement):
  """'configurable.parameter' of a gin binding statement (None for macros)."""
  if not getattr(statement, 'arg_name', ''):
    return None
  return f'{statement.selector.rpartition(".")[2]}.{statement.arg_name}'


def _statements(text):
  return list(config_parser.ConfigParser(
      text, gin.config.ParserDelegate(skip_unknown=True)))


# The line of a workdir's config that records the gin imports of the run
# that wrote it: data, never executed (check_bindings_only refuses an
# `import` statement there); the estimator's own gin files bring them.
IMPORTS_LINE = '# gin imports (not executed here; your gin files import them):'


def _imports(statements):
  """The ImportStatements among `statements` that import a module (gin's
  own `from __gin__ import ...` left out); `.module` is 'a.b' for both
  `import a.b` and `from a import b`."""
  return [st for st in statements
          if isinstance(st, config_parser.ImportStatement)
          and not st.module.startswith('__gin__')]


def imports_of(text):
  """Modules imported by the `import` statements of gin config `text`,
  in order."""
  return list(dict.fromkeys(st.module for st in _imports(_statements(text))))


def without_imports(text):
  """Gin config `text` without its `import` statements."""
  lines = text.splitlines(keepends=True)
  drop = {st.location.line_num - 1 for st in _statements(text)
          if isinstance(st, config_parser.ImportStatement)}
  return ''.join(line for number, line in enumerate(lines)
                 if number not in drop)


def for_workdir(text, recorded=()):
  """The operative config `text` as a workdir stores it: bindings only.

  Locations (LOCATION_BINDINGS) are removed, and so are `import`
  statements, whose modules are recorded on one comment line
  (IMPORTS_LINE) for `recorded_imports` to read back as data.

  Args:
    text: gin's operative config.
    recorded: modules the workdir's config already records: a run of the
      same config whose modules were imported otherwise (no `import` line)
      keeps them recorded.
  """
  modules = sorted(set(imports_of(text)) | set(recorded))
  body = without_imports(without_locations(text)).lstrip('\n')
  header = f'{IMPORTS_LINE} {", ".join(modules)}\n' if modules else ''
  return header + body


_MODULE_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')


def recorded_imports(text):
  """The module names a workdir's config records (IMPORTS_LINE), as data
  (only dotted Python names are taken; nothing is imported)."""
  for line in text.splitlines():
    if line.startswith(IMPORTS_LINE):
      return [m.strip() for m in line[len(IMPORTS_LINE):].split(',')
              if _MODULE_NAME.fullmatch(m.strip())]
  return []


def _import_error(module, where, error):
  return errors.UserError(
      f'{where} imports {module}, which cannot be imported here '
      f'({type(error).__name__}: {" ".join(str(error).split())}). Install '
      f'the package that provides {module} (e.g. pip install -e '
      'path/to/your/package) or add its folder to PYTHONPATH.')


def import_modules(texts, gin_bindings):
  """Runs the `import` statements of the caller's gin files and bindings
  (not of a workdir's config), before any binding is parsed, so that a
  workdir's config parsed first can bind the configurables they register.

  Args:
    texts: {path: text} of the gin files (read_gin_files).
    gin_bindings: binding strings.
  """
  sources = [(path, text) for path, text in texts.items()
             if not _is_workdir_config(path)]
  sources += [(f'--gin_bindings={b!r}', b) for b in gin_bindings]
  for where, text in sources:
    try:
      statements = _statements(text)
    except (ValueError, SyntaxError):
      continue  # reported by the strict parse, with its location
    for statement in _imports(statements):
      module = statement.module
      try:
        importlib.import_module(module)
      except Exception as e:  # pylint: disable=broad-except
        # Anything the user's module raises while importing.
        line = statement.location.line_num
        raise _import_error(module, f'{where} line {line}', e) from e


def check_recorded_imports(path, text):
  """Refuses a workdir's config (`text`, read from `path`) whose run
  imported modules (its IMPORTS_LINE) that this process has not imported:
  its bindings name their configurables, so the caller must bring the same
  imports."""
  missing = [m for m in recorded_imports(text) if m not in sys.modules]
  if missing:
    lines = ' '.join(f'import {m}' for m in missing)
    raise errors.UserError(
        f'{path} was trained with a gin file that imports '
        f'{", ".join(missing)} (recorded there as data; nothing read from a '
        'workdir is executed). Pass the gin file you trained with, which '
        f'holds `{lines}`, with --gin_file=YOUR.gin (or --gin_bindings='
        f'"import {missing[0]}" for each module).')


def without_bindings(text, drop):
  """A gin config text without the bindings `drop` selects, each removed
  whole (its continuation lines too: gin wraps long values).

  Args:
    text: gin config text.
    drop: called with each binding's 'scope/configurable.parameter' (no
      scope: 'configurable.parameter'; the configurable's module left out);
      True removes it.
  """
  statements = _statements(text)
  lines = text.splitlines(keepends=True)
  starts = [st.location.line_num - 1 for st in statements] + [len(lines)]
  dropped = set()
  for statement, start, end in zip(statements, starts, starts[1:]):
    name = _binding_name(statement)
    scope = getattr(statement, 'scope', '')
    if name and drop(f'{scope}/{name}' if scope else name):
      for number in range(start, end):
        stripped = lines[number].strip()
        if number == start or (stripped and not stripped.startswith('#')):
          dropped.add(number)
  return ''.join(line for number, line in enumerate(lines)
                 if number not in dropped)


def without_locations(text):
  """A gin config text with its LOCATION_BINDINGS removed (in any scope),
  for writing into a workdir."""
  return without_bindings(
      text, lambda name: name.rpartition('/')[2] in LOCATION_BINDINGS)


def check_bindings_only(path, payload=None):
  """The text of a gin file read from a workdir, refused unless it holds
  only bindings, none of them a location.

  A workdir's operative_config.gin is data, not code: an `import` (with
  `from __gin__ import dynamic_registration` it makes any function, e.g.
  os.system, a configurable a binding can call) or an `include` in it is
  refused before gin parses anything; so is a binding of a path
  (LOCATION_BINDINGS), which only the caller chooses. The file is read
  once: what gin then parses is the returned text, never the file again
  (another process may replace the file between two reads).

  Args:
    path: the file, for messages (and read when `payload` is None).
    payload: its bytes, read once by the caller.
  """
  try:
    if payload is None:
      payload = storage.read_bytes(path)
    text = payload.decode()
    statements = _statements(text)
  except (OSError, ValueError, SyntaxError, TypeError, KeyError,
          UnicodeDecodeError, tf.errors.OpError) as e:
    if isinstance(e, errors.RecordError):
      raise
    message = str(e).strip().replace('\n', ' ')
    raise errors.UserError(
        f'{path} is not a valid gin config ({message}). Restore it by '
        'running the train binary again with this --workdir and the same '
        'flags.') from e
  for statement in statements:
    line = statement.location.line_content.strip()
    if isinstance(statement, (config_parser.ImportStatement,
                              config_parser.IncludeStatement)):
      raise errors.UserError(
          f'{path} line {statement.location.line_num} holds {line!r}: a '
          'workdir\'s config may only hold bindings (nothing read from a '
          'workdir is executed). Delete that line, or rewrite the file by '
          'running the train binary again with this --workdir and the same '
          'flags.')
    name = _binding_name(statement)
    if name in LOCATION_BINDINGS:
      flag = {'load_dataset.data_dir': '--data_dir=DIR'}.get(
          name, f"--gin_bindings=\"{name} = '...'\"")
      raise errors.UserError(
          f'{path} line {statement.location.line_num} binds {name}: a '
          'workdir\'s config may not choose where files are read or written '
          '(only your own flags and gin files do). Delete that line and pass '
          f'the location yourself ({flag}).')
  return text


def _is_workdir_config(path):
  return os.path.basename(path) == files.CONFIG_FILE


class _GinText(io.StringIO):
  """A gin file's text, read once, with its path as the name gin reports
  in its errors."""

  def __init__(self, text, name):
    super().__init__(text)
    self.name = name


def read_gin_files(gin_files):
  """{path: text} of the gin files, each read once.

  A workdir's config (named files.CONFIG_FILE) is checked to hold
  bindings only (check_bindings_only) on the bytes read here; gin parses
  these texts, never the files again, so a file swapped after the check is
  not what gets parsed.
  """
  for path in gin_files:
    if not os.path.isfile(path):
      raise errors.UserError(
          f'gin file {path} does not exist. Pass an existing file with '
          '--gin_file, e.g. gin_configs/demo.gin.')
  texts = {}
  for path in gin_files:
    if path in texts:
      continue
    if _is_workdir_config(path):
      texts[path] = check_bindings_only(path)
      continue
    try:
      texts[path] = storage.read_bytes(
          path, 'Pass a regular gin file with --gin_file.').decode()
    except UnicodeDecodeError as e:
      raise errors.UserError(f'gin file {path} is not UTF-8 text ({e}). '
                             'Save it as UTF-8.') from e
    except OSError as e:
      raise errors.UserError(f'gin file {path} cannot be read ({e}). Pass a '
                             'readable file with --gin_file.') from e
  return texts


def parse_gin(gin_files, gin_bindings, skip_unknown=False):
  """Parses gin files and bindings strictly (typos are errors).

  Files named like a workdir's config (files.CONFIG_FILE) are read as
  data: they may only hold bindings (check_bindings_only).

  Args:
    gin_files: paths of gin files, parsed in order.
    gin_bindings: binding strings, parsed after them.
    skip_unknown: ignore bindings of configurables not registered in this
      process (the report reads only the `load_dataset` bindings of a
      workdir's config and registers nothing else).

  Returns:
    {path: text} of the gin files: what was checked and parsed, each file
    read once (read_gin_files).
  """
  gin.clear_config()
  texts = read_gin_files(gin_files)
  import_modules(texts, gin_bindings)
  if not skip_unknown:
    for path, text in texts.items():
      if _is_workdir_config(path):
        check_recorded_imports(path, text)
  try:
    for path in gin_files:
      gin.parse_config(_GinText(texts[path], path), skip_unknown=skip_unknown)
    gin.parse_config(list(gin_bindings), skip_unknown=skip_unknown)
    return texts
  except ImportError as e:  # an import gin runs itself (e.g. in an include)
    raise _import_error(getattr(e, 'name', None) or 'a module',
                        ', '.join(gin_files) or '--gin_bindings', e) from e
  except (ValueError, SyntaxError, TypeError, KeyError) as e:
    where = ', '.join(list(gin_files) + [f'--gin_bindings={b!r}'
                                         for b in gin_bindings])
    message = str(e).strip().replace('\n', ' ')
    raise errors.UserError(
        f'Bad gin config ({where}): {message}. Fix the binding (see the '
        'configurables listed in docs/operations.md).') from e


# Bindings that do not change what a trial computes, by prefix
# ('Configurable.' for all of a configurable's, or 'configurable.param').
_NOT_FINGERPRINTED = set()


def not_fingerprinted(*prefixes):
  """Declares bindings that do not change what a trial computes (placement,
  speed, locations, the estimator's and experiments' own settings): the
  config fingerprint leaves them out."""
  _NOT_FINGERPRINTED.update(prefixes)


def is_fingerprinted(name):
  """Whether binding `name` ('configurable.param') is in the fingerprint."""
  return not name.startswith(tuple(sorted(_NOT_FINGERPRINTED)))


def fingerprinted_lines(text):
  """The binding lines of gin config `text` that decide what a trial
  computes, stripped and sorted."""
  # Whole bindings are dropped first: gin wraps a long value (e.g. a deep
  # --data_dir) onto a continuation line, which a line filter would miss.
  # Imports are left out: the same bindings mean the same trials whether
  # the imports came from a gin file or were done otherwise.
  text = without_imports(
      without_bindings(text, lambda name: not is_fingerprinted(name)))
  return sorted(line.strip() for line in text.splitlines()
                if line.strip() and not line.strip().startswith('#'))
