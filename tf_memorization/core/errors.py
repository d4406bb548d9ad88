"""Errors a user can cause, and the checks of configured values.

Bad input ends in one line naming the file or binding and the fix, with exit
status 2 (cli.binary_main): UserError, ConfigError, RecordError (a workdir's
files), NoSpaceError (a full disk, quota or file size limit) and
DataNotPreparedError. The checks below are what every gin configurable calls
on its arguments, so that a wrong type or range (`TrialTrainer.epochs =
'15'`, `TrialTrainer.eval_batch_size = 0`) is one sentence naming the binding,
not a traceback from deep inside TensorFlow.
"""

import errno
import math
import numbers


class UserError(Exception):
  """Bad input from the user: a config, a flag, data or a workdir."""


class ConfigError(ValueError):
  """A configured value of the wrong type or outside its range."""


class DataNotPreparedError(RuntimeError):
  """The dataset is not in data_dir and cannot be downloaded here."""


class RecordError(ValueError):
  """A workdir's files are missing, corrupt, or do not belong together."""


class NoSpaceError(OSError):
  """A write failed for lack of space (disk full, quota, file size limit).

  An OSError (errno ENOSPC, EDQUOT or EFBIG), so callers that retry failed
  writes (e.g. lease renewal) still do; the binaries print its message.
  """

  def __init__(self, message, code=errno.ENOSPC):
    super().__init__(message)
    self.errno = code


# Exceptions that mean bad input, not a bug in this package: the binaries
# print them as one line and exit with status 2.
USER_ERRORS = (UserError, ConfigError, RecordError, NoSpaceError,
               DataNotPreparedError)


def _got(value):
  return f'got {value!r} (a {type(value).__name__})'


def integer(name, value, minimum=None, maximum=None, allow_none=False):
  """`value` as an int, or a ConfigError naming the binding `name`."""
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ConfigError(f'{name} must be an integer, {_got(value)}.')
  if minimum is not None and value < minimum:
    raise ConfigError(f'{name} must be >= {minimum}, got {value}.')
  if maximum is not None and value > maximum:
    raise ConfigError(f'{name} must be <= {maximum}, got {value}.')
  return int(value)


def number(name, value, minimum=None, maximum=None, above=None, below=None,
           allow_none=False):
  """`value` as a finite float within the bounds, or a ConfigError.

  minimum/maximum are inclusive bounds, above/below exclusive ones.
  """
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ConfigError(f'{name} must be a number, {_got(value)}.')
  value = float(value)
  if not math.isfinite(value):
    raise ConfigError(f'{name} must be finite, got {value}.')
  for bound, ok, text in ((minimum, lambda b: value >= b, '>='),
                          (maximum, lambda b: value <= b, '<='),
                          (above, lambda b: value > b, '>'),
                          (below, lambda b: value < b, '<')):
    if bound is not None and not ok(bound):
      raise ConfigError(f'{name} must be {text} {bound:g}, got {value:g}.')
  return value


def boolean(name, value):
  if not isinstance(value, bool):
    raise ConfigError(f'{name} must be True or False, {_got(value)}.')
  return value


def string(name, value, allow_none=False):
  if value is None and allow_none:
    return None
  if not isinstance(value, str) or not value:
    raise ConfigError(f'{name} must be a non-empty string, {_got(value)}.')
  return value


def choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f'{name} must be one of {tuple(choices)}, got '
                      f'{value!r}.')
  return value


def sequence(name, value, item, allow_empty=True):
  """A tuple of `item(f'{name}[i]', element)` for a list or tuple `value`."""
  if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
    raise ConfigError(f'{name} must be a list or tuple, {_got(value)}.')
  if not value and not allow_empty:
    raise ConfigError(f'{name} must not be empty.')
  return tuple(item(f'{name}[{i}]', v) for i, v in enumerate(value))
