"""What the two binaries share: gin parsing and one clear error for bad input.

Library modules define no flags (flags live in train.py and estimate.py);
errors a user can cause become `UserError`, printed as one sentence that names
the file or binding and the fix, with exit status 2.
"""

import contextlib
import os
import re
import socket
import sys
import uuid

import gin

# Import every module that registers gin configurables, so a binding to any
# of them parses with skip_unknown=False.
from tf_memorization import data  # pylint: disable=unused-import
from tf_memorization import errors
from tf_memorization import masks  # pylint: disable=unused-import
from tf_memorization import models  # pylint: disable=unused-import
from tf_memorization import records
from tf_memorization import strategy  # pylint: disable=unused-import
from tf_memorization import training  # pylint: disable=unused-import

EXIT_USER_ERROR = 2
UserError = errors.UserError


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
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  return list(config_parser.ConfigParser(
      text, gin.config.ParserDelegate(skip_unknown=True)))


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


def check_bindings_only(path):
  """Refuses a gin file read from a workdir unless it holds only bindings,
  none of them a location.

  A workdir's operative_config.gin is data, not code: an `import` (with
  `from __gin__ import dynamic_registration` it makes any function, e.g.
  os.system, a configurable a binding can call) or an `include` in it is
  refused before gin parses anything; so is a binding of a path
  (LOCATION_BINDINGS), which only the caller chooses.
  """
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    text = records.read_bytes(path).decode()
    statements = _statements(text)
  except (OSError, ValueError, SyntaxError, TypeError, KeyError,
          UnicodeDecodeError, tf.errors.OpError) as e:
    if isinstance(e, records.RecordError):
      raise
    message = str(e).strip().replace('\n', ' ')
    raise UserError(f'{path} is not a valid gin config ({message}). Restore '
                    'it by running the train binary again with this '
                    '--workdir and the same flags.') from e
  for statement in statements:
    line = statement.location.line_content.strip()
    if isinstance(statement, (config_parser.ImportStatement,
                              config_parser.IncludeStatement)):
      raise UserError(
          f'{path} line {statement.location.line_num} holds {line!r}: a '
          'workdir\'s config may only hold bindings (nothing read from a '
          'workdir is executed). Delete that line, or rewrite the file by '
          'running the train binary again with this --workdir and the same '
          'flags.')
    name = _binding_name(statement)
    if name in LOCATION_BINDINGS:
      flag = {'load_dataset.data_dir': '--data_dir=DIR'}.get(
          name, f"--gin_bindings=\"{name} = '...'\"")
      raise UserError(
          f'{path} line {statement.location.line_num} binds {name}: a '
          'workdir\'s config may not choose where files are read or written '
          '(only your own flags and gin files do). Delete that line and pass '
          f'the location yourself ({flag}).')


def parse_gin(gin_files, gin_bindings):
  """Parses gin files and bindings strictly (typos are errors).

  Files named like a workdir's config (records.CONFIG_FILE) are read as
  data: they may only hold bindings (check_bindings_only).
  """
  gin.clear_config()
  for path in gin_files:
    if not os.path.isfile(path):
      raise UserError(f'gin file {path} does not exist. Pass an existing file '
                      'with --gin_file, e.g. gin_configs/demo.gin.')
  for path in gin_files:
    if os.path.basename(path) == records.CONFIG_FILE:
      check_bindings_only(path)
  try:
    gin.parse_config_files_and_bindings(gin_files, gin_bindings,
                                        skip_unknown=False,
                                        finalize_config=False)
  except (ValueError, SyntaxError, TypeError, KeyError) as e:
    where = ', '.join(list(gin_files) + [f'--gin_bindings={b!r}'
                                         for b in gin_bindings])
    message = str(e).strip().replace('\n', ' ')
    raise UserError(f'Bad gin config ({where}): {message}. Fix the binding '
                    '(see the configurables listed in the README).') from e


def user_error_types():
  """Exceptions that mean bad input, not a bug in this package."""
  return (UserError, errors.ConfigError, records.RecordError,
          records.NoSpaceError, data.DataNotPreparedError)


# gin appends where a configurable was called; the message says enough.
_GIN_CALL_NOTE = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")


def exit_on_user_error(error):
  """Prints `error` as one line and exits with status 2."""
  message = _GIN_CALL_NOTE.sub('', str(error))
  message = ' '.join(message.split())  # one line, also for gin's notes
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def check_writable(workdir, flag='--workdir', shown=None):
  """Creates `workdir` and checks a file can be written there.

  Args:
    workdir: the directory.
    flag: the flag that named it, for the error message.
    shown: the path the message names (default `workdir`; e.g. the final
      folder of a staging folder).

  Returns:
    The topmost directory this call created (None if `workdir` existed), for
    remove_if_empty when the run fails before writing anything.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # A name of its own: workers sharing the workdir start together.
  probe = os.path.join(workdir, f'.write_probe-{uuid.uuid4().hex}')
  created = None
  try:
    if '://' not in workdir:  # object stores have no empty directories
      path = os.path.abspath(workdir)
      while not os.path.exists(path):
        created, path = path, os.path.dirname(path)
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    remove_if_empty(created)
    full = records.no_space_error(workdir, e)
    if full is not None:
      raise full from e
    raise UserError(f'Cannot write to {flag}={shown or workdir} ({e}). '
                    'Choose a writable directory, or fix its '
                    'permissions.') from e
  return created


def remove_if_empty(directory):
  """Removes the local `directory` (made by check_writable) if it holds no
  files, so that a run failing on bad input leaves no trace of itself.

  Directories are removed bottom-up with os.rmdir, which fails on one that is
  not empty: a file another process writes meanwhile is never lost.
  """
  if not directory or not os.path.isdir(directory):
    return
  try:
    for root, _, _ in os.walk(directory, topdown=False):
      os.rmdir(root)
  except OSError:
    pass  # not empty: it is kept


_STAGE = '.tmp-'
_OLD = '.old-'


def _owner_tag():
  """pid-random@host: names a staging folder after the process writing it."""
  return f'{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}'


def _dead_owner(name, marker):
  """Whether the folder `name` (...<marker>pid-hex@host) is a dead process's."""
  from tf_memorization import leases  # pylint: disable=g-import-not-at-top
  tag = name.rstrip('/').rpartition(marker)[2]
  pid_part, _, host = tag.partition('@')
  pid = pid_part.partition('-')[0]
  return bool(host) and leases.owner_is_dead(f'{host}:{pid}:x')


def _remove_tree(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    if tf.io.gfile.exists(path):
      tf.io.gfile.rmtree(path)
  except (OSError, tf.errors.OpError):
    pass  # a leftover temporary folder; the error being raised says more


def _rename_dir(source, target):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if '://' not in source:
    os.rename(source, target)  # atomic on one file system
  else:
    tf.io.gfile.rename(source, target, overwrite=False)


def _recover(final):
  """Cleans up after a killed writer of `final`: its staging folders go, and
  a swap killed halfway (`final` moved aside, the new one not yet in place)
  is undone by moving the earlier folder back."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parent, base = os.path.split(final.rstrip('/'))
  if not tf.io.gfile.isdir(parent or '.'):
    return
  for name in sorted(tf.io.gfile.listdir(parent or '.')):
    name = name.rstrip('/')
    path = os.path.join(parent, name)
    if name.startswith(base + _OLD) and _dead_owner(name, _OLD):
      if not tf.io.gfile.exists(final):
        _rename_dir(path, final)
      else:
        _remove_tree(path)
    elif name.startswith(base + _STAGE) and _dead_owner(name, _STAGE):
      _remove_tree(path)


@contextlib.contextmanager
def staged_output(final, flag, marker):
  """A temporary folder beside `final`, swapped in for it when the block
  succeeds and removed when it fails.

  A failed run (bad input found late, a full disk, an exception) leaves
  `final` as it was; a successful one replaces it whole, so readers never
  see a mix of two runs. The swap is two renames (`final` aside, the new
  folder in place): a process killed between them leaves `final` absent
  and the earlier folder beside it, which the next run moves back.

  Args:
    final: the output folder (e.g. W/estimates).
    flag: the flag or binding that named it, for the messages.
    marker: a file every folder of ours holds (e.g. summary.json): an
      existing non-empty `final` without it is someone else's folder and is
      refused rather than replaced. None: `final` is ours by its place
      (e.g. W/estimates).

  Yields:
    The staging folder's path.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  final = final.rstrip('/') or final
  _recover(final)
  if tf.io.gfile.exists(final) and not tf.io.gfile.isdir(final):
    raise UserError(f'{flag}={final} is a file, not a folder: choose a new or '
                    'empty folder for the outputs.')
  if marker and tf.io.gfile.isdir(final):
    entries = [e.rstrip('/') for e in tf.io.gfile.listdir(final)]
    if entries and marker not in entries:
      raise UserError(
          f'{flag}={final} holds other files ({", ".join(sorted(entries)[:3])}'
          f'{", ..." if len(entries) > 3 else ""}) and no {marker}: it is '
          'not an output folder of this tool, and its contents would be '
          'replaced. Choose a new or empty folder.')
  tag = _owner_tag()
  stage = f'{final}{_STAGE}{tag}'
  created = check_writable(stage, flag, shown=final)
  try:
    yield stage
  except BaseException:
    _remove_tree(stage)
    remove_if_empty(created)
    raise
  if not tf.io.gfile.exists(final):
    _rename_dir(stage, final)
    return
  old = f'{final}{_OLD}{tag}'
  _rename_dir(final, old)
  try:
    _rename_dir(stage, final)
  except BaseException:
    _rename_dir(old, final)
    raise
  _remove_tree(old)


def binary_main(run_fn):
  """The absl `main` of a binary: one clear line and exit 2 for bad input.

  Args:
    run_fn: called with no arguments once flags are parsed.
  """

  def main(argv):
    from absl import logging  # pylint: disable=g-import-not-at-top
    if len(argv) > 1:
      exit_on_user_error(UserError(
          f'Unexpected arguments {argv[1:]}; use --gin_bindings for '
          'bindings.'))
    logging.set_verbosity(logging.WARNING)
    try:
      run_fn()
    except user_error_types() as e:
      exit_on_user_error(e)
    except MemoryError:
      exit_on_user_error(UserError(
          'Out of memory. Lower the batch sizes, or Estimator.block_size for '
          'the estimator.'))
    except Exception as e:  # pylint: disable=broad-except
      # A full disk met outside the atomic writes (e.g. TensorBoard events).
      code = records.no_space_errno(e)
      if code is None:
        raise
      exit_on_user_error(UserError(
          f'No space left on the device ({os.strerror(code)}: {e}): free '
          'space or use another --workdir, then run the command again; '
          'finished trials are kept.'))

  return main
