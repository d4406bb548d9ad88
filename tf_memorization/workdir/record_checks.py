"""The checks of one trial record's arrays against its workdir's dataset.

What loading.load (and check) runs on every record once its sha256 is
verified (the sha256 is no signature: anyone can re-sign a record, so
every value is checked for what it can be): its metadata's types and
ranges; shapes and dtypes against W/dataset.npz; values no trainer writes
(classes outside the dataset's, probabilities outside [0, 1], NaN or
infinite margins and log-odds, predictions that contradict their own
probabilities and margins, held-out class probabilities that are no
softmax, learning-dynamics proxies out of range), unless the record is
flagged as diverged; and the mask, seed and planned fields its subset
design or its experiment's plan.json says it must have (DesignJobs,
plan_jobs). Each failure is one RecordError naming the file and what to
do.
"""

import json
import math
import os

import numpy as np
import tensorflow as tf

from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.stats import masks as masks_lib
from tf_memorization.workdir import records

RecordError = records.RecordError
_hint = records.fix_hint


def predicted_splits(meta):
  """The splits a record holds predictions for (check_metadata checked
  the field): both, unless it was imported from data without them."""
  return tuple(meta.get('predicted', records.SPLITS))


def with_unpredicted(arrays, splits, n, n_test):
  """The record's arrays with a split it holds no predictions for filled
  in (pred records.UNKNOWN_CLASS, so never correct; prob and margin 0):
  the estimator reads Records.predicted and uses none of them."""
  if len(splits) == len(records.SPLITS):
    return arrays
  arrays = dict(arrays)
  for split, size in (('train', n), ('test', n_test)):
    if split not in splits:
      arrays[f'{split}_pred'] = np.full(size, records.UNKNOWN_CLASS,
                                        arrays[f'{split}_pred'].dtype)
      for field in ('prob', 'margin'):
        arrays[f'{split}_{field}'] = np.zeros(size, np.float16)
  return arrays


def check_shapes(path, arrays, meta, n, n_test, workdir):
  """Refuses a record whose arrays do not fit W/dataset.npz's n and n_test
  (a split the record holds no predictions for: empty arrays)."""
  if meta.get('num_train') != n or meta.get('num_test') != n_test:
    raise RecordError(
        f'{path} was written for {meta.get("num_train")} train / '
        f'{meta.get("num_test")} test examples but '
        f'{os.path.join(workdir, files.DATASET_FILE)} has {n} / {n_test}: '
        'the record belongs to another dataset. Move it to the workdir it '
        'came from, or delete it.')
  predicted = predicted_splits(meta)
  n_pred = n if 'train' in predicted else 0
  n_test_pred = n_test if 'test' in predicted else 0
  expected = {'mask': ((n + 7) // 8,), 'train_pred': (n_pred,),
              'train_prob': (n_pred,), 'train_margin': (n_pred,),
              'test_pred': (n_test_pred,), 'test_prob': (n_test_pred,),
              'test_margin': (n_test_pred,)}
  kinds = {'mask': 'u', 'train_pred': 'iu', 'test_pred': 'iu',
           'train_prob': 'f', 'test_prob': 'f', 'train_margin': 'f',
           'test_margin': 'f'}
  for field, shape in expected.items():
    array = arrays[field]
    if array.shape != shape or array.dtype.kind not in kinds[field]:
      raise RecordError(
          f'{path}: {field} is {array.dtype} of shape {array.shape}, but '
          f'{os.path.join(workdir, files.DATASET_FILE)} needs shape {shape} '
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


def check_values(path, arrays, num_classes, from_margins=False):
  """Refuses values no model computes: classes outside the dataset's,
  probabilities outside [0, 1], NaN or infinite probabilities or margins.
  A record imported from margins (`from_margins`) may hold
  records.UNKNOWN_CLASS.

  A min/max per array (over the float16 bits), so the cost is a few fast
  passes over memory the checksum has just read.
  """
  lowest = records.UNKNOWN_CLASS if from_margins else 0
  for field in ('train_pred', 'test_pred'):
    values = arrays[field]
    if len(values) and (values.min() < lowest or
                        values.max() >= num_classes):
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


def check_consistency(path, arrays, train_labels, test_labels, num_classes,
                      from_margins=False):
  """Refuses predictions that contradict their own probabilities and
  margins (a re-signed record: its checksum is a plain sha256).

  Each example's predicted class, true-class probability p and margin m
  come from one set of logits, so whatever the model: a correct
  prediction has m >= 0 and p >= 1/C (the true class is the most likely),
  a wrong one m <= 0 and p <= 1/2 (another class is at least as likely).
  The float16 rounding of p and m keeps these (1/C less one float16 unit).
  A record imported from margins (`from_margins`) predicts the label or
  records.UNKNOWN_CLASS, nothing else.
  """
  floor = np.float16((1.0 / num_classes) * (1 - 2.0 ** -10))
  for split, labels in (('train', train_labels), ('test', test_labels)):
    pred, prob = arrays[f'{split}_pred'], arrays[f'{split}_prob']
    if len(pred) != len(labels):  # a split without predictions (empty)
      continue
    if from_margins and np.count_nonzero(
        (pred != records.UNKNOWN_CLASS) & (pred != labels)):
      raise RecordError(
          f'{path}: its {split}_pred mixes unknown classes (-1) with wrong '
          'known ones: a record imported from margins holds the label or '
          f'-1 for each example. {_hint(path)}')
    margin = arrays[f'{split}_margin']
    correct = pred == labels
    if prob.dtype == margin.dtype == np.float16:
      # On the bits (SIMD-fast): p in [0, 1] orders like its bits, and a
      # margin's sign is its top bit (-0 is 0).
      p, m = prob.view(np.uint16), margin.view(np.uint16)
      below_floor = p < floor.view(np.uint16)
      above_half = p > np.float16(0.5).view(np.uint16)
      negative, positive = m > 0x8000, (m < 0x8000) & (m > 0)
    else:
      below_floor, above_half = prob < floor, prob > 0.5
      negative, positive = margin < 0, margin > 0
    bad = (np.count_nonzero(correct & (negative | below_floor))
           + np.count_nonzero(~correct & (positive | above_half)))
    if bad:
      raise RecordError(
          f'{path}: {bad} of its {split} predictions contradict their own '
          f'{split}_prob or {split}_margin (a correct prediction whose true '
          'class is not the most likely, or a wrong one whose true class '
          'is): no model computes them. ' + _hint(path))


# Ranges of the metrics the trainer records (records.write_record).
_SECONDS_MAX = 1e8  # three years: a trial's set-up, training or prediction
_METRIC_RANGES = {
    'train_accuracy': (0.0, 1.0), 'heldout_accuracy': (0.0, 1.0),
    'test_accuracy': (0.0, 1.0), 'setup_seconds': (0.0, _SECONDS_MAX),
    'train_seconds': (0.0, _SECONDS_MAX),
    'predict_seconds': (0.0, _SECONDS_MAX)}
_METRIC_COUNTS = {'resumed_from_epoch': 0, 'subset_size': 0,
                  'trained_together': 1}
# Metrics that may be NaN: no held-out examples; a diverged loss.
_METRIC_NAN = ('heldout_accuracy', 'final_loss')


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value, minimum):
  return (isinstance(value, int) and not isinstance(value, bool)
          and value >= minimum)


def check_metadata(path, meta, n):
  """Refuses metadata fields of the wrong type or range.

  The checksum is a plain sha256, so anyone can re-sign a record: every
  field a reader uses is checked here, before it is used (the trial
  index, seed, dataset, design and fingerprint are then compared with what
  they must be). Accuracies are not trusted even when in range: the
  estimator derives them from the predictions.
  """

  def refuse(field, value, what):
    raise RecordError(f'{path}: its metadata field {field!r} is {value!r}, '
                      f'not {what}: it was altered, or not written by this '
                      f'package. {_hint(path)}')

  for field in ('trial_index', 'seed', 'num_train', 'num_test'):
    if not _is_count(meta.get(field), 0):
      refuse(field, meta.get(field), 'a non-negative integer')
  for field in ('fingerprint',):
    if not isinstance(meta.get(field), str):
      refuse(field, meta.get(field), 'a string')
  for field in ('dataset', 'metrics'):
    if not isinstance(meta.get(field), dict):
      refuse(field, meta.get(field), 'a JSON object')
  if 'design' not in meta or not isinstance(meta['design'], (dict, type(None))):
    refuse('design', meta.get('design'), 'a JSON object or null')
  predicted = meta.get('predicted', list(records.SPLITS))
  if (not isinstance(predicted, list) or not predicted or
      any(split not in records.SPLITS for split in predicted) or
      len(set(predicted)) != len(predicted)):
    refuse('predicted', predicted, "a non-empty list of 'train', 'test'")
  source = meta.get('imported', {})
  if not isinstance(source, dict) or not all(
      isinstance(v, str) for v in source.values()):
    refuse('imported', source, 'an object of strings (where the trials '
           'came from)')
  if not isinstance(meta.get('from_margins', False), bool):
    refuse('from_margins', meta.get('from_margins'), 'true or false')
  if not isinstance(meta.get('diverged'), (str, type(None))):
    refuse('diverged', meta.get('diverged'), 'null or a reason')
  for field in ('written_at', 'host'):
    if field in meta and not isinstance(meta[field], str):
      refuse(field, meta[field], 'a string')
  if 'num_trials' in meta and not _is_count(meta['num_trials'], 1):
    refuse('num_trials', meta['num_trials'], 'a positive integer')
  ratio = meta.get('subset_ratio')
  if 'subset_ratio' in meta and not (_is_number(ratio) and 0 < ratio < 1):
    refuse('subset_ratio', ratio, 'a number in (0, 1)')
  versions = meta.get('versions', {})
  if not isinstance(versions, dict) or not all(
      isinstance(v, str) for v in versions.values()):
    refuse('versions', versions, 'an object of version strings')
  for key, value in meta['metrics'].items():
    field = f'metrics.{key}'
    if key in _METRIC_COUNTS:
      low = _METRIC_COUNTS[key]
      high = n if key == 'subset_size' else None
      if not _is_count(value, low) or (high is not None and value > high):
        refuse(field, value, f'an integer in [{low}, {high or "..."}]')
    elif key in _METRIC_RANGES or key == 'final_loss':
      if not _is_number(value):
        refuse(field, value, 'a number')
      if not math.isfinite(value):
        if key not in _METRIC_NAN:
          refuse(field, value, 'a finite number')
      elif key in _METRIC_RANGES:
        low, high = _METRIC_RANGES[key]
        if not low <= value <= high:
          refuse(field, value, f'a number in [{low:g}, {high:g}]')
      elif value < 0:
        refuse(field, value, 'a non-negative loss')
    elif not isinstance(value, (int, float, str, type(None))):
      refuse(field, value, 'a number or a string')


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
    if mask is None:
      mask = np.unpackbits(arrays['mask'], count=n).view(bool)
    _check_heldout_probs(path, probs, arrays['train_pred'][~mask],
                         num_classes)
  if 'train_visits' in arrays:
    if mask is None:
      mask = np.unpackbits(arrays['mask'], count=n).view(bool)
    field = _bad_dynamics(arrays, mask)
    if field:
      raise RecordError(
          f'{path}: {field} holds values no training run records for the '
          f'examples of its subset (see dynamics.py). {_hint(path)}')


def _check_heldout_probs(path, probs, pred, num_classes):
  """Refuses held-out class probabilities that are no softmax of the
  logits that predicted `pred`: each row sums to 1 (up to float16
  rounding: 2^-11 of each value, and float32's sum) and is largest at the
  predicted class (up to one float16 unit)."""
  if not probs.size:
    return
  sums = probs.sum(axis=1, dtype=np.float32)
  tolerance = 2.0 ** -10 + num_classes * 2.0 ** -22
  off = np.abs(sums - 1) > tolerance
  if off.any():
    raise RecordError(
        f'{path}: {np.count_nonzero(off)} rows of {records.HELDOUT_PROBS} do '
        f'not sum to 1 (e.g. {float(sums[off][0]):.4g}): they are no class '
        f'probabilities. {_hint(path)}')
  top = probs.max(axis=1).astype(np.float32)
  at_pred = probs[np.arange(len(probs)), pred].astype(np.float32)
  wrong = at_pred < top * (1 - 2.0 ** -10)
  if wrong.any():
    raise RecordError(
        f'{path}: {np.count_nonzero(wrong)} rows of {records.HELDOUT_PROBS} '
        'are largest at another class than the record\'s train_pred for '
        f'that example: they are not the model\'s probabilities. '
        f'{_hint(path)}')


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


# --------------------------------------------------------------------------
# The mask, seed and planned fields each record must have


class DesignJobs:
  """The mask and seed of trial t under the subset design in the records.

  Every main-run record names its design (SubsetDesign.fingerprint_fields,
  under the checksum); its mask and seed must be that design's for its
  trial index, so that a copied, renamed or foreign record is refused.
  """

  def __init__(self, directory, n):
    self._directory = directory
    self._n = n
    self._designs = {}
    self._plan = None

  def __call__(self, path, meta):
    """(mask or its digest, seed, {metadata field: planned value})."""
    fields = meta.get('design')
    if fields is None and 'design' in meta and 'imported' in meta:
      # An imported trial: checked against its entry in W/plan/.
      return imported_job(self._directory, path, meta)
    if fields is None and 'design' in meta:
      # A model an experiment planned: checked against its folder's plan.
      plan = os.path.join(self._directory, files.PLAN_FILE)
      if not tf.io.gfile.exists(plan):
        raise RecordError(
            f'{path} holds a model of an experiment (its mask was planned, '
            f'not drawn from a subset design), but {self._directory} has no '
            f'{files.PLAN_FILE}: it is not a trial of this run. Move it '
            f'back to its experiment folder. {_hint(path)}')
      if self._plan is None:
        self._plan = plan_jobs(self._directory, 'plan')
      return self._plan(path, meta)
    if not isinstance(fields, dict):
      raise RecordError(f'{path} names no subset design. {_hint(path)}')
    key = json.dumps(fields, sort_keys=True)
    if key not in self._designs:
      try:
        self._designs[key] = masks_lib.SubsetDesign(
            num_trials=int(fields.get('num_trials', 2)),
            subset_ratio=float(fields['subset_ratio']),
            design=fields['design'], seed=int(fields['seed']))
      except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f'{path} names an unusable subset design '
                          f'{fields!r} ({e}). {_hint(path)}') from e
    design = self._designs[key]
    t = meta['trial_index']
    try:
      # Records written before the field was kept have no subset_ratio.
      planned = ({'subset_ratio': design.subset_ratio}
                 if 'subset_ratio' in meta else {})
      return design.mask(self._n, t), design.trial_seed(t), planned
    except ValueError as e:  # a balanced design's trial index out of range
      raise RecordError(f'{path}: trial {t} is not a trial of its design '
                        f'{fields!r} ({e}). {_hint(path)}') from e


def plan_entry_path(directory, trial_index):
  """W/plan/trial_<t>.json: an imported trial's mask digest and seed."""
  return os.path.join(directory, files.PLAN_DIR,
                      f'trial_{int(trial_index):06d}.json')


def imported_job(directory, path, meta):
  """(mask digest, seed, {}) of an imported trial, from its plan entry
  (written by the writer before the record, so a record without one was
  not written here)."""
  entry = plan_entry_path(directory, meta['trial_index'])
  fix = (f'It was not written into {directory} by its TrialWriter or '
         'import: move it back where it came from, or delete it.')
  if not tf.io.gfile.exists(entry):
    raise RecordError(f'{path} is an imported trial, but {entry} (its '
                      f'mask digest) is missing. {fix}')
  job = storage.read_json(entry, fix)
  if (not isinstance(job, dict) or job.get('index') != meta['trial_index']
      or not isinstance(job.get('mask'), str) or
      not isinstance(job.get('seed'), int)):
    raise RecordError(f'{entry} is not the plan entry of trial '
                      f'{meta["trial_index"]}: it was altered. {fix}')
  return job['mask'], job['seed'], {}


def planned(directory):
  """{index: (mask digest, seed, other planned fields)} of the folder's
  plan.json."""
  path = os.path.join(directory, files.PLAN_FILE)
  fix = ('Run the estimate binary again with the same flags (it rewrites '
         'the plan), or delete the folder to redo the experiment.')
  try:
    plan = storage.read_json(path, fix)
    return {int(job['index']): (
        str(job['mask']), int(job['seed']),
        {key: value for key, value in job.items()
         if key not in ('index', 'mask', 'seed')})
            for job in plan['jobs']}
  except (OSError, tf.errors.OpError, ValueError, UnicodeDecodeError,
          KeyError, TypeError, AttributeError) as e:
    if isinstance(e, RecordError):
      raise
    raise RecordError(
        f'{path} is missing or unreadable ({type(e).__name__}: {e}): the '
        f'models in {directory} cannot be checked against their plan. '
        f'{fix}') from e


def plan_jobs(directory, jobs):
  """The job lookup of an experiment's folder: (mask or its digest, seed)."""
  if jobs == 'plan':
    by_index = planned(directory)
  else:
    by_index = {int(job.index): (np.asarray(job.mask, bool), int(job.seed),
                                 dict(getattr(job, 'metadata', None) or {}))
                for job in jobs}

  def lookup(path, meta):
    job = by_index.get(meta['trial_index'])
    if job is None:
      raise RecordError(
          f'{path} holds model {meta["trial_index"]}, which its folder\'s '
          'plan does not hold: it belongs to another experiment. '
          f'{_hint(path)}')
    return job

  return lookup
