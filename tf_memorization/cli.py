"""What the binaries share: one clear error line for bad input, and quiet.

Only the binaries (train, estimate, report, inspect_workdir, compare) import
this module; library modules raise the errors of `errors` and define no
flags.
An error a user can cause is printed as one sentence naming the file or
binding and the fix, with exit status 2.

A binary prints only this package's own lines: TensorFlow's Python-side
warnings (deprecation notices of the libraries it calls) are silenced here,
and the C++ log lines TensorFlow writes while it loads are filtered by
quiet.py, which each binary starts before it imports TensorFlow. Set
TF_MEMORIZATION_VERBOSE=1 to see everything.
"""

import os
import re
import sys

from absl import logging
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import quiet
from tf_memorization.core import storage

EXIT_USER_ERROR = 2
VERBOSE_ENV = quiet.VERBOSE_ENV
verbose = quiet.verbose


def _quiet_libraries():
  """Only errors from TensorFlow's and absl's Python loggers."""
  logging.set_verbosity(logging.ERROR)
  tf.get_logger().setLevel('ERROR')


# gin appends where a configurable was called; the message says enough.
_GIN_CALL_NOTE = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")


def exit_on_user_error(error):
  """Prints `error` as one line and exits with status 2."""
  message = _GIN_CALL_NOTE.sub('', str(error))
  message = ' '.join(message.split())  # one line, also for gin's notes
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def binary_main(run_fn):
  """The absl `main` of a binary: one clear line and exit 2 for bad input.

  Args:
    run_fn: called with no arguments once flags are parsed.
  """

  def main(argv):
    if len(argv) > 1:
      exit_on_user_error(errors.UserError(
          f'Unexpected arguments {argv[1:]}; use --gin_bindings for '
          'bindings.'))
    if verbose():
      logging.set_verbosity(logging.INFO)
    else:
      _quiet_libraries()
    try:
      run_fn()
    except errors.USER_ERRORS as e:
      exit_on_user_error(e)
    except MemoryError:
      exit_on_user_error(errors.UserError(
          'Out of memory. Lower the batch sizes, or Estimator.block_size for '
          'the estimator.'))
    except Exception as e:  # pylint: disable=broad-except
      # A full disk met outside the atomic writes (e.g. TensorBoard events).
      code = storage.no_space_errno(e)
      if code is None:
        raise
      exit_on_user_error(errors.UserError(
          f'No space left on the device ({os.strerror(code)}: {e}): free '
          'space or use another --workdir, then run the command again; '
          'finished trials are kept.'))

  return main
