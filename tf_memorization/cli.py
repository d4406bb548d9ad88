"""What the two binaries share: gin parsing and one clear error for bad input.

Library modules define no flags (flags live in train.py and estimate.py);
errors a user can cause become `UserError`, printed as one sentence that names
the file or binding and the fix, with exit status 2.
"""

import os
import re
import sys
import uuid

import gin

# Import every module that registers gin configurables, so a binding to any
# of them parses with skip_unknown=False.
from tf_memorization import data  # pylint: disable=unused-import
from tf_memorization import masks  # pylint: disable=unused-import
from tf_memorization import models  # pylint: disable=unused-import
from tf_memorization import records
from tf_memorization import strategy  # pylint: disable=unused-import
from tf_memorization import training  # pylint: disable=unused-import

EXIT_USER_ERROR = 2


class UserError(Exception):
  """Bad input from the user: a config, a flag, data or a workdir."""


def check_bindings_only(path):
  """Refuses a gin file read from a workdir unless it holds only bindings.

  A workdir's operative_config.gin is data, not code: an `import` (with
  `from __gin__ import dynamic_registration` it makes any function, e.g.
  os.system, a configurable a binding can call) or an `include` in it is
  refused before gin parses anything.
  """
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path) as f:
      text = f.read()
    statements = list(config_parser.ConfigParser(
        text, gin.config.ParserDelegate(skip_unknown=True)))
  except (ValueError, SyntaxError, TypeError, KeyError, UnicodeDecodeError,
          tf.errors.OpError) as e:
    message = str(e).strip().replace('\n', ' ')
    raise UserError(f'{path} is not a valid gin config ({message}). Restore '
                    'it by running the train binary again with this '
                    '--workdir and the same flags.') from e
  for statement in statements:
    if isinstance(statement, (config_parser.ImportStatement,
                              config_parser.IncludeStatement)):
      line = statement.location.line_content.strip()
      raise UserError(
          f'{path} line {statement.location.line_num} holds {line!r}: a '
          'workdir\'s config may only hold bindings (nothing read from a '
          'workdir is executed). Delete that line, or rewrite the file by '
          'running the train binary again with this --workdir and the same '
          'flags.')


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
  return (UserError, records.RecordError, records.NoSpaceError,
          data.DataNotPreparedError)


# gin appends where a configurable was called; the message says enough.
_GIN_CALL_NOTE = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")


def exit_on_user_error(error):
  """Prints `error` as one line and exits with status 2."""
  message = _GIN_CALL_NOTE.sub('', str(error))
  message = ' '.join(message.split())  # one line, also for gin's notes
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def check_writable(workdir, flag='--workdir'):
  """Creates `workdir` and checks a file can be written there.

  Args:
    workdir: the directory.
    flag: the flag that named it, for the error message.

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
    raise UserError(f'Cannot write to {flag}={workdir} ({e}). Choose a '
                    'writable directory, or fix its permissions.') from e
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
