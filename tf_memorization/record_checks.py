"""The checks of one trial record's arrays against its workdir's dataset.

What loading.load (and check) runs on every record once its sha256 is
verified: shapes and dtypes against W/dataset.npz, and values no trainer
writes (classes outside the dataset's, probabilities outside [0, 1], NaN or
infinite margins and log-odds, learning-dynamics proxies out of range),
unless the record is flagged as diverged. Each failure is one RecordError
naming the file and what to do.
"""

import os

import numpy as np

from tf_memorization import records

RecordError = records.RecordError
_hint = records.fix_hint


def check_shapes(path, arrays, meta, n, n_test, workdir):
  """Refuses a record whose arrays do not fit W/dataset.npz's n and n_test."""
  if meta.get('num_train') != n or meta.get('num_test') != n_test:
    raise RecordError(
        f'{path} was written for {meta.get("num_train")} train / '
        f'{meta.get("num_test")} test examples but '
        f'{os.path.join(workdir, records.DATASET_FILE)} has {n} / {n_test}: '
        'the record belongs to another dataset. Move it to the workdir it '
        'came from, or delete it.')
  expected = {'mask': ((n + 7) // 8,), 'train_pred': (n,), 'train_prob': (n,),
              'train_margin': (n,), 'test_pred': (n_test,),
              'test_prob': (n_test,), 'test_margin': (n_test,)}
  kinds = {'mask': 'u', 'train_pred': 'iu', 'test_pred': 'iu',
           'train_prob': 'f', 'test_prob': 'f', 'train_margin': 'f',
           'test_margin': 'f'}
  for field, shape in expected.items():
    array = arrays[field]
    if array.shape != shape or array.dtype.kind not in kinds[field]:
      raise RecordError(
          f'{path}: {field} is {array.dtype} of shape {array.shape}, but '
          f'{os.path.join(workdir, records.DATASET_FILE)} needs shape {shape} '
          f'({n_test if field.startswith("test") else n} examples): the '
          f'record does not match the workdir\'s dataset. {_hint(path)}')


# float16 bit patterns: a non-negative float16 orders like its bits, so
# 0 <= p <= 1 (and not NaN) is bits <= 0x3C00, and a finite value is one
# whose exponent bits (0x7C00) are not all set. Integer reductions over the
# bits are SIMD-fast; numpy's float16 min/max convert every element.
_FLOAT16_ONE_BITS = 0x3C00
_FLOAT16_EXPONENT_BITS = 0x7C00


def _in_unit_interval(values):
  if values.dtype == np.float16:
    bits = values.view(np.uint16)
    if bits.max() <= _FLOAT16_ONE_BITS:
      return True
  return bool(values.min() >= 0 and values.max() <= 1)  # e.g. -0.0, float32


def _finite(values):
  if values.dtype == np.float16:
    return bool((values.view(np.uint16) & 0x7FFF).max()
                < _FLOAT16_EXPONENT_BITS)
  return bool(np.isfinite(values).all())


def check_values(path, arrays, num_classes):
  """Refuses values no model computes: classes outside the dataset's,
  probabilities outside [0, 1], NaN or infinite probabilities or margins.

  A min/max per array (over the float16 bits), so the cost is a few fast
  passes over memory the checksum has just read.
  """
  for field in ('train_pred', 'test_pred'):
    values = arrays[field]
    if len(values) and (values.min() < 0 or values.max() >= num_classes):
      raise RecordError(
          f'{path}: {field} holds classes outside 0..{num_classes - 1} (min '
          f'{values.min()}, max {values.max()}): no model of this dataset '
          f'predicts them. {_hint(path)}')
  for field in ('train_prob', 'test_prob'):
    values = arrays[field]
    if len(values) and not _in_unit_interval(values):
      raise RecordError(
          f'{path}: {field} holds values outside [0, 1] or NaN (min '
          f'{values.min()}, max {values.max()}), and the record is not '
          f'flagged as diverged. {_hint(path)}')
  for field in ('train_margin', 'test_margin'):
    values = arrays[field]
    if len(values) and not _finite(values):
      raise RecordError(
          f'{path}: {field} holds NaN or infinite values, and the record is '
          f'not flagged as diverged. {_hint(path)}')


COUNT_FIELDS = ('train_learned_epoch', 'train_forgetting', 'train_visits')


def check_optional(path, arrays, n, n_test, num_classes, check_values):
  """Refuses format-3 fields of the wrong shape or dtype, and (unless the
  record is flagged as diverged) values no trainer writes: non-finite
  log-odds, proxies out of range for the subset's examples."""
  mask = None
  for field in records.OPTIONAL_FIELDS:
    if field not in arrays:
      continue
    array = arrays[field]
    if field == records.HELDOUT_PROBS:
      if mask is None:
        mask = np.unpackbits(arrays['mask'], count=n).view(bool)
      shape = (n - int(np.count_nonzero(mask)), num_classes)
      kinds = 'f'
    else:
      shape = (n_test,) if field.startswith('test') else (n,)
      kinds = 'i' if field in COUNT_FIELDS else 'f'
    if array.shape != shape or array.dtype.kind not in kinds:
      raise RecordError(
          f'{path}: {field} is {array.dtype} of shape {array.shape}, but the '
          f'workdir\'s dataset needs shape {shape}: the record does not '
          f'match it. {_hint(path)}')
  if not check_values:
    return
  for field in records.LOGODDS_FIELDS:
    if field in arrays and len(arrays[field]) and not _finite(arrays[field]):
      raise RecordError(f'{path}: {field} holds NaN or infinite values, and '
                        f'the record is not flagged as diverged. {_hint(path)}')
  if records.HELDOUT_PROBS in arrays:
    probs = arrays[records.HELDOUT_PROBS]
    if probs.size and not _in_unit_interval(probs.ravel()):
      raise RecordError(f'{path}: {records.HELDOUT_PROBS} holds values '
                        f'outside [0, 1] or NaN. {_hint(path)}')
  if 'train_visits' in arrays:
    if mask is None:
      mask = np.unpackbits(arrays['mask'], count=n).view(bool)
    field = _bad_dynamics(arrays, mask)
    if field:
      raise RecordError(
          f'{path}: {field} holds values no training run records for the '
          f'examples of its subset (see dynamics.py). {_hint(path)}')


def _bad_dynamics(arrays, mask):
  """The first proxy field out of range on the subset's examples, or None."""
  if not all(f in arrays for f in records.DYNAMICS_FIELDS):
    return next(f for f in records.DYNAMICS_FIELDS if f not in arrays)
  visits = arrays['train_visits'][mask].astype(np.int64)
  checks = {
      'train_visits': visits.min(initial=1) >= 1,
      'train_learned_epoch': _between(arrays['train_learned_epoch'][mask],
                                      0, visits),
      'train_forgetting': _between(arrays['train_forgetting'][mask], 0,
                                   visits - 1),
  }
  for field in ('train_csl', 'train_final_loss'):
    values = arrays[field][mask].astype(np.float32)
    checks[field] = bool(np.isfinite(values).all() and
                         values.min(initial=0) >= 0)
  return next((f for f, fine in checks.items() if not fine), None)


def _between(values, low, high):
  values = values.astype(np.int64)
  return bool((values >= low).all() and (values <= high).all())


def missing_field_error(path, meta, field, fix):
  """The RecordError of a record without a format-3 field it is asked for."""
  version = meta.get('format_version')
  if version is not None and version < 3:
    why = (f'it is a record of format {version}, written before the '
           'log-odds, learning-dynamics proxies and held-out probabilities '
           'were recorded')
  elif field in records.DYNAMICS_FIELDS:
    why = ('its trial was trained with TrialTrainer.record_dynamics = '
           'False')
  elif field == records.HELDOUT_PROBS:
    why = ('its trial was trained without TrialTrainer.record_heldout_probs '
           '= True')
  else:
    why = 'its writer did not record it'
  return RecordError(f'{path} holds no {field}: {why}. {fix}')
