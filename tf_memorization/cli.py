"""What the two binaries share: gin parsing and one clear error for bad input.

Library modules define no flags (flags live in train.py and estimate.py);
errors a user can cause become `UserError`, printed as one sentence that names
the file or binding and the fix, with exit status 2.
"""

import os
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


def parse_gin(gin_files, gin_bindings):
  """Parses gin files and bindings strictly (typos are errors)."""
  gin.clear_config()
  for path in gin_files:
    if not os.path.isfile(path):
      raise UserError(f'gin file {path} does not exist. Pass an existing file '
                      'with --gin_file, e.g. gin_configs/demo.gin.')
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
  return (UserError, records.RecordError, data.DataNotPreparedError)


def exit_on_user_error(error):
  """Prints `error` as one line and exits with status 2."""
  message = ' '.join(str(error).split())  # one line, also for gin's notes
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def check_writable(workdir):
  """Creates `workdir` and checks a file can be written there."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # A name of its own: workers sharing the workdir start together.
  probe = os.path.join(workdir, f'.write_probe-{uuid.uuid4().hex}')
  try:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise UserError(f'Cannot write to --workdir={workdir} ({e}). Choose a '
                    'writable directory, or fix its permissions.') from e


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

  return main
