"""Loading a directory of trial records, every value checked first.

    load(W)    -> Records: masks, correctness, probabilities (and margins,
                  predictions) of every trial, as [k, n] arrays
    check(W)   verifies records as load would, keeping nothing (the train
               binary checks before it skips a trial as done)

A workdir may be shared or come from someone else, so every record is
untrusted input: its zip structure and sha256 (records.read_record), its
trial index, shapes and dataset against W/dataset.npz, its fingerprint
against the folder's fixed config (W/run.json), its mask and seed against
its subset design (or its experiment folder's plan.json), and its values
(classes within the dataset's, probabilities in [0, 1], finite margins)
unless the record is flagged as diverged. Any failure is one RecordError
naming the file and what to do.
"""

import collections
import concurrent.futures
import dataclasses
import os

import numpy as np

from tf_memorization.core import files
from tf_memorization.core import spill
from tf_memorization.core import storage
from tf_memorization.stats import bits
from tf_memorization.workdir import record_checks
from tf_memorization.workdir import records

RecordError = records.RecordError
_hint = records.fix_hint  # what to do about a bad file, as a sentence


# The [k, ...] fields of Records (one row per trial), but trial_indices.
_PER_TRIAL = ('masks', 'train_correct', 'test_correct', 'train_prob',
              'test_prob', 'train_margin', 'test_margin', 'train_pred',
              'test_pred')


@dataclasses.dataclass
class Records:
  """All trials of a workdir, ordered by trial index (k trials).

  Attributes:
    masks: bool [k, n], True where the example was in the trial's subset.
    train_correct: bool [k, n], trial t's model classifies x_i correctly.
    test_correct: bool [k, n_test].
    train_prob, test_prob: float16, softmax probability of the true class.
    train_margin, test_margin: float16, true logit minus the largest other
      (None with margins=False).
    train_labels, test_labels: int64 [n], [n_test] (the labels trained on).
    original_train_labels: int64 [n], before label-noise injection.
    train_ids, test_ids: str, each example's tfds id.
    trial_indices: int [k].
    metadata: list of k dicts (each record's metadata).
    dataset_info: dict describing the data.
    fingerprint: the config fingerprint shared by all records.
    paths: list of k record paths.
    train_pred, test_pred: predicted classes (only with predictions=True).
    diverged: {trial index: reason} of the diverged trials left out
      (diverged='skip'); with diverged='keep' they are loaded and listed.
  """
  masks: np.ndarray
  train_correct: np.ndarray
  test_correct: np.ndarray
  train_prob: np.ndarray
  test_prob: np.ndarray
  train_labels: np.ndarray
  test_labels: np.ndarray
  original_train_labels: np.ndarray
  train_ids: np.ndarray
  test_ids: np.ndarray
  trial_indices: np.ndarray
  metadata: list
  dataset_info: dict
  fingerprint: str
  paths: list
  train_margin: np.ndarray = None  # None when loaded with margins=False
  test_margin: np.ndarray = None
  train_pred: np.ndarray = None    # only with predictions=True
  test_pred: np.ndarray = None
  diverged: dict = dataclasses.field(default_factory=dict)
  # The format-3 fields asked for with `fields`: {name: [k, n or n_test]}
  # (train_logodds, test_logodds, the train_<proxy> fields).
  extra: dict = dataclasses.field(default_factory=dict)
  # With 'heldout_probs' in `fields`: float64 [n, C] sums of the held-out
  # class probabilities over the trials without i, and int [n] counts.
  heldout_prob_sum: np.ndarray = None
  heldout_count: np.ndarray = None
  # Of `if_present`: {field: (records without it, the first such path)}
  # for each field some record lacks (then it is in neither extra nor sums).
  missing_fields: dict = dataclasses.field(default_factory=dict)
  # The splits the records hold predictions for: a workdir imported from
  # data without train predictions (datamodels' test margins) has
  # ('test',), and its train-side fields are zeros that mean nothing.
  predicted: tuple = ('train', 'test')

  @property
  def num_trials(self):
    return len(self.trial_indices)

  def close(self):
    """Frees the temporary files of a compact load (load's `compact`)."""
    for value in self._per_trial_values():
      if isinstance(value, spill.ColumnSpill):
        value.close()

  def _per_trial_values(self):
    return [getattr(self, name) for name in _PER_TRIAL] + list(
        self.extra.values())

  def dense(self):
    """These records with every per-trial field an array (a compact load
    unpacked: for the code that needs arrays, e.g. the experiments)."""
    def as_array(value):
      if isinstance(value, (bits.BitMatrix, spill.ColumnSpill)):
        return np.asarray(value)
      return value
    return dataclasses.replace(
        self, extra={name: as_array(v) for name, v in self.extra.items()},
        **{name: as_array(getattr(self, name)) for name in _PER_TRIAL})

  def first(self, k):
    """The records of the first k trials (by trial index): what a run
    stopped at k would have had."""
    rows = slice(0, int(k))
    per_trial = _PER_TRIAL + ('trial_indices',)
    if self.heldout_prob_sum is not None and int(k) < self.num_trials:
      raise ValueError('Records.first: the held-out probability sums cover '
                       'every trial.')
    return dataclasses.replace(
        self, metadata=self.metadata[rows], paths=self.paths[rows],
        extra={name: value[rows] for name, value in self.extra.items()},
        **{name: getattr(self, name)[rows] for name in per_trial
           if getattr(self, name) is not None})


# The fields of the dataset description that identify the data.
_DATASET_IDENTITY = ('name', 'version', 'num_classes', 'num_train',
                     'num_test', 'checksum')


DIVERGED_POLICIES = ('refuse', 'skip', 'keep')


class _Checker:
  """Checks every record of one directory against what it must be."""

  def __init__(self, directory, dataset_info, n, n_test, jobs, fingerprint,
               labels=None, members=None):
    self.directory = directory
    # The arrays read, verified and checked (records.read_record): all
    # when None; a record of format 4 is read no further.
    self.members = members
    self.info = dataset_info
    self.n, self.n_test = n, n_test
    self.labels = labels  # (train, test): predictions checked against them
    self.num_classes = int(dataset_info['num_classes'])
    self.jobs = (record_checks.DesignJobs(directory, n) if jobs is None
                 else record_checks.plan_jobs(directory, jobs))
    self.fingerprint = fingerprint

  def __call__(self, t, path):
    """(arrays, metadata) of record t, or a RecordError saying what is wrong."""
    arrays, meta = records.read_record(path, members=self.members)
    record_checks.check_metadata(path, meta, self.n)
    if meta.get('trial_index') != t:
      raise RecordError(f'{path} holds trial {meta.get("trial_index")}, not '
                        f'{t}: it was renamed. Move it back or delete it.')
    record_checks.check_shapes(path, arrays, meta, self.n, self.n_test,
                               self.directory)
    dataset = meta.get('dataset')
    if not isinstance(dataset, dict) or any(
        dataset.get(k) != self.info.get(k) for k in _DATASET_IDENTITY):
      raise RecordError(
          f'{path} was trained on other data than '
          f'{os.path.join(self.directory, files.DATASET_FILE)} describes '
          '(its name, version, sizes or labels differ): it belongs to another '
          'workdir. Move it there, or delete it.')
    if self.fingerprint is not None and meta.get('fingerprint') != (
        self.fingerprint[0]):
      raise RecordError(
          f'{path} was trained with another config (fingerprint '
          f'{meta.get("fingerprint")}) than the one {self.fingerprint[1]} '
          f'({self.fingerprint[0]}): it does not belong here (a mix of '
          'different training configs). Move it to its own workdir, or '
          'delete it.')
    mask, seed, planned = self.jobs(path, meta)
    for field, value in planned.items():  # as JSON holds them
      if field not in meta or meta[field] != storage.json_safe(value):
        raise RecordError(
            f'{path}: its metadata field {field!r} is '
            f'{meta.get(field, "missing")!r}, but its design (or plan) says '
            f'{value!r}: it was altered after it was written. {_hint(path)}')
    if isinstance(mask, str):  # a plan.json digest
      same_mask = mask == records.packed_digest(arrays['mask'])
    else:
      same_mask = np.array_equal(arrays['mask'], np.packbits(mask))
    if meta.get('seed') != seed or not same_mask:
      raise RecordError(
          f'{path}: its mask or seed is not the one trial {t} of its '
          'design (or plan) has: it was trained on another subset, or '
          f'copied from another trial. {_hint(path)}')
    from_margins = bool(meta.get('from_margins', False))
    if meta.get('diverged') is None:
      record_checks.check_values(path, arrays, self.num_classes, from_margins)
      if self.labels is not None:
        record_checks.check_consistency(path, arrays, *self.labels,
                                        self.num_classes, from_margins)
    derived = records.diverged_reason(arrays, meta['metrics'],
                                      self.num_classes)
    if (derived is None) != (meta.get('diverged') is None):
      said = 'diverged' if derived is None else 'did not diverge'
      raise RecordError(
          f'{path} says its model {said}, but its predictions and loss say '
          f'{derived or "it did not"}: it was altered after it was written. '
          f'{_hint(path)}')
    record_checks.check_optional(path, arrays, self.n, self.n_test,
                                 self.num_classes,
                                 meta.get('diverged') is None)
    return arrays, meta


def _members(fields):
  """The arrays a load of `fields` reads: the core ones, the fields, and
  with any proxy all of them (their ranges are checked together)."""
  if set(fields) & set(records.DYNAMICS_FIELDS):
    fields = tuple(fields) + records.DYNAMICS_FIELDS
  return records.CORE_FIELDS + tuple(fields)


def _checked_records(found, checker, workers=None):
  """(t, path, arrays, metadata) for each record of `found`, in order.

  With workers > 1, records are read and checked by that many threads
  (reading, sha256 and the mask draws release the GIL), with at most
  2 x workers records in flight, so memory holds only those beyond the
  caller's arrays. The default is one per core, up to 4: on the 2-core
  development machine two threads load 4,000 CIFAR-100-sized records in
  12.9 s against 18.3 s for one, and 250 ImageNet-sized ones in 17.5 s
  against 28.5 s (warm page cache).
  """
  items = list(found.items())
  workers = workers or min(4, os.cpu_count() or 1)
  if workers < 2 or len(items) < 4:
    for t, path in items:
      yield (t, path, *checker(t, path))
    return
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    position = 0
    try:
      while pending or position < len(items):
        while position < len(items) and len(pending) < 2 * workers:
          t, path = items[position]
          pending.append((t, path, pool.submit(checker, t, path)))
          position += 1
        t, path, future = pending.popleft()
        yield (t, path, *future.result())
    finally:
      for _, _, future in pending:
        future.cancel()


def _expected_fingerprint(directory, fingerprint):
  """(fingerprint, where it comes from) the records must have, or None."""
  if fingerprint is not None:
    return fingerprint, 'this run has'
  fixed = records.read_run_file(directory)
  if fixed is None:
    return None
  return fixed['fingerprint'], f'{records.run_file_path(directory)} fixes'


def check(directory, trial_indices=None, jobs=None, fingerprint=None,
          dataset_info=None, labels=None):
  """Verifies records of `directory` as `load` would, keeping nothing.

  Args:
    directory: a workdir or an experiment's folder.
    trial_indices: check only these trials' records (those that exist).
    jobs, fingerprint: as for `load`.
    dataset_info: the data the records must be of (write_dataset_file's
      info); default: W/dataset.npz's.
    labels: (train, test) labels the predictions are checked against
      (with dataset_info; default: W/dataset.npz's).

  Returns:
    {trial index: metadata} of the verified records (diverged included).
  """
  found = records.list_records(directory)
  if trial_indices is not None:
    wanted = set(int(t) for t in trial_indices)
    found = {t: p for t, p in found.items() if t in wanted}
  if not found:
    return {}
  if dataset_info is None:
    dataset_arrays, dataset_info = records.read_dataset_file(directory)
    labels = (dataset_arrays['train_labels'], dataset_arrays['test_labels'])
  checker = _Checker(directory, dataset_info, dataset_info['num_train'],
                     dataset_info['num_test'], jobs,
                     _expected_fingerprint(directory, fingerprint), labels)
  by_fingerprint, verified = {}, {}
  for t, path, _, meta in _checked_records(found, checker):
    by_fingerprint.setdefault(meta.get('fingerprint'), []).append(path)
    verified[t] = meta
  _refuse_mixed(directory, by_fingerprint)
  return verified


def _refuse_mixed(directory, by_fingerprint):
  if len(by_fingerprint) > 1:
    groups = '; '.join(f'fingerprint {fp}: {len(p)} records, e.g. {p[0]}'
                       for fp, p in by_fingerprint.items())
    raise RecordError(
        f'{directory} mixes records of {len(by_fingerprint)} different '
        f'training configs or datasets ({groups}). Move each config\'s '
        'records to its own workdir.')


def load(workdir, predictions=False, margins=True, trial_indices=None,
         jobs=None, fingerprint=None, diverged='refuse', threads=None,
         fields=(), missing_fix=None, if_present=(), compact=False):
  """Loads and validates every trial record of `workdir`.

  Every record is checked before any of its values is used: the zip
  structure, its sha256 (arrays and metadata), its trial index, shapes and
  dataset against W/dataset.npz, its fingerprint against the folder's fixed
  config (W/run.json, or `fingerprint`), its mask and seed against its
  subset design (or the experiment's plan, `jobs`), and its values
  (classes within the dataset's, probabilities in [0, 1], finite margins)
  unless it is flagged as diverged. Only the arrays loaded are read and
  checked (a record of format 4 signs each array: the rest of the file,
  e.g. the proxies when they are not asked for, is not read; older
  records are read whole for their one checksum). Arrays are filled in
  place, a few records at a time, so the peak memory is that of the result
  plus a few records.

  Args:
    workdir: the train binary's --workdir, or an experiment's folder.
    predictions: also return the predicted classes.
    margins: also return the logit margins (float16 [k, n] and [k, n_test]).
    trial_indices: load only these trials (default: all found).
    jobs: the planned jobs (objects with index, mask and seed) when the
      masks come from a plan (experiments), not from a subset design; or
      'plan': the jobs of the folder's plan.json (mask digests). Default:
      each record's subset design, or for a record of planned masks its
      folder's plan.json.
    fingerprint: the config fingerprint every record must have (default:
      the one W/run.json fixes; without it, the records must agree).
    diverged: what to do with records flagged as diverged: 'refuse' (a
      RecordError naming them and the fix), 'skip' (leave them out, listed
      in Records.diverged) or 'keep'.
    threads: records read and checked at once (default: one per core, up
      to 4).
    fields: format-3 fields to load as well (records.OPTIONAL_FIELDS):
      the log-odds and proxies as Records.extra [k, n] arrays, and
      'heldout_probs' as Records.heldout_prob_sum / heldout_count. A
      record without one is a RecordError (`missing_fix`, a sentence or a
      function of the field, says what to do).
    if_present: format-3 fields loaded like `fields` when every record
      holds them; otherwise left out and counted in Records.missing_fields.
    compact: memory that does not grow with k beyond 2 bits per (trial,
      example): the masks and the training correctness as bit-packed
      stats/bits.BitMatrix, and every other [k, n] training-side field on
      a core/spill.ColumnSpill (a temporary file read a block of examples
      at a time); the test-side fields stay arrays. Every reader of the
      estimator takes these in place of arrays (they index as [rows],
      [:, a:b] and [rows, cols]); Records.close() frees the spills.

  Returns:
    A `Records`.

  Raises:
    RecordError: no records, a corrupt or altered record, records of
      different configs or data, shapes or masks that do not match, values
      out of range, or diverged trials under 'refuse' (the message names the
      files and says what to do).
  """
  if diverged not in DIVERGED_POLICIES:
    raise ValueError(f'diverged must be one of {DIVERGED_POLICIES}, got '
                     f'{diverged!r}.')
  dataset_arrays, dataset_info = records.read_dataset_file(workdir)
  train_labels = dataset_arrays['train_labels']
  test_labels = dataset_arrays['test_labels']
  n, n_test = len(train_labels), len(test_labels)
  found = records.list_records(workdir)
  if trial_indices is not None:
    absent = sorted(set(trial_indices) - set(found))
    if absent:
      raise RecordError(f'{workdir} has no records for trials {absent[:10]}.')
    found = {t: found[t] for t in sorted(trial_indices)}
  if not found:
    raise RecordError(f'{workdir}/{files.TRIALS_DIR} holds no trial '
                      'records: run the train binary with this --workdir '
                      'first.')
  k = len(found)

  def train_side(dtype, name):
    """A [k, n] training-side field: an array, or spilled (compact)."""
    if compact and dtype != bool:
      return spill.ColumnSpill(k, n, dtype, what=name)
    if compact:
      return bits.BitMatrix.empty(k, n)
    return np.zeros((k, n), dtype)

  out = {'masks': train_side(bool, 'masks'),
         'train_correct': train_side(bool, 'train_correct'),
         'test_correct': np.zeros((k, n_test), bool),
         'train_prob': train_side(np.float16, 'train_prob'),
         'test_prob': np.zeros((k, n_test), np.float16)}
  if margins:
    out['train_margin'] = train_side(np.float16, 'train_margin')
    out['test_margin'] = np.zeros((k, n_test), np.float16)
  if predictions:
    num_classes = int(dataset_info['num_classes'])
    out['train_pred'] = train_side(records.pred_dtype(num_classes),
                                   'train_pred')
    out['test_pred'] = np.zeros((k, n_test), records.pred_dtype(num_classes))
  required = set(fields)
  fields = tuple(fields) + tuple(f for f in if_present if f not in required)
  missing = {}
  unknown = sorted(set(fields) - set(records.OPTIONAL_FIELDS))
  if unknown:
    raise ValueError(f'load: unknown fields {unknown}.')
  extra = {}
  for field in fields:
    if field.startswith('test'):
      extra[field] = np.zeros((k, n_test), np.float16)
    elif field != records.HELDOUT_PROBS:
      extra[field] = train_side(
          np.int32 if field in record_checks.COUNT_FIELDS else np.float16,
          field)
  prob_sum = prob_count = None
  if records.HELDOUT_PROBS in fields:
    prob_sum = np.zeros((n, int(dataset_info['num_classes'])))
    prob_count = np.zeros(n, np.int64)
  missing_fix = missing_fix or (
      'Retrain into a new --workdir with this version of tf_memorization, '
      'or do not ask for it.')
  labels_as = {}  # the labels in each prediction dtype (a cheaper compare)

  def is_label(pred, labels, name):
    dtype = pred.dtype
    if (name, dtype) not in labels_as:
      cast = labels
      if dtype.kind in 'iu' and len(labels):
        info = np.iinfo(dtype)
        if info.min <= labels.min() and labels.max() <= info.max:
          cast = labels.astype(dtype)
      labels_as[name, dtype] = cast
    return pred == labels_as[name, dtype]

  checker = _Checker(workdir, dataset_info, n, n_test, jobs,
                     _expected_fingerprint(workdir, fingerprint),
                     (train_labels, test_labels),
                     members=_members(fields))
  metadata, paths, kept, by_fingerprint = [], [], [], {}
  diverged_trials = {}
  predicted = {}  # 'splits': those of the first record (all must agree)

  def fill():
    """The pass over the records: fills `out` and `extra` row by row."""
    row = 0
    for t, path, arrays, meta in _checked_records(found, checker, threads):
      by_fingerprint.setdefault(meta.get('fingerprint'), []).append(path)
      if meta.get('diverged') is not None:
        diverged_trials[t] = meta['diverged']
        if diverged != 'keep':
          continue
      splits = record_checks.predicted_splits(meta)
      if predicted.setdefault('splits', splits) != splits:
        raise RecordError(
            f'{path} holds predictions for {list(splits)}, the records '
            f'before it for {list(predicted["splits"])}: they were not '
            'imported together. Import them into separate workdirs.')
      arrays = record_checks.with_unpredicted(arrays, splits, n, n_test)
      mask = np.unpackbits(arrays['mask'], count=n).view(bool)
      correct = is_label(arrays['train_pred'], train_labels, 'train')
      if compact:
        out['masks'].packed[row] = arrays['mask']
        out['train_correct'].packed[row] = np.packbits(correct)
      else:
        out['masks'][row] = mask
        out['train_correct'][row] = correct
      out['test_correct'][row] = is_label(arrays['test_pred'], test_labels,
                                          'test')
      for field in ('train_prob', 'test_prob', 'train_margin', 'test_margin',
                    'train_pred', 'test_pred'):
        if field in out:
          _put(out[field], row, arrays[field])
      for field in fields:
        if field not in arrays:
          if field in required:
            raise record_checks.missing_field_error(
                path, meta, field,
                missing_fix(field) if callable(missing_fix) else missing_fix)
          count, first = missing.get(field, (0, path))
          missing[field] = (count + 1, first)
          continue
        if field in missing:
          continue
        if field in extra:
          _put(extra[field], row, arrays[field])
        else:
          held_out = ~mask
          prob_sum[held_out] += arrays[field]
          prob_count[held_out] += 1
      metadata.append(meta)
      paths.append(path)
      kept.append(t)
      row += 1
    _refuse_mixed(workdir, by_fingerprint)
    if diverged_trials and diverged == 'refuse':
      shown = sorted(diverged_trials)[:10]
      first = shown[0]
      raise RecordError(
          f'{len(diverged_trials)} of the {k} trials in {workdir} diverged '
          f'(trials {shown}{", ..." if len(diverged_trials) > 10 else ""}; '
          f'#{first}: {diverged_trials[first]}, see {found[first]}): their '
          'predictions say nothing about memorization. Fix the training config '
          '(e.g. lower TrialTrainer.base_learning_rate) and train into a new '
          '--workdir, or estimate without them: bind Estimator.diverged_trials '
          "= 'skip' (summary.json counts them).")
    if not kept:
      raise RecordError(
          f'Every one of the {k} trials in {workdir} diverged (e.g. #'
          f'{next(iter(diverged_trials))}: '
          f'{next(iter(diverged_trials.values()))}): nothing can be estimated. '
          'Fix the training config (e.g. lower TrialTrainer.base_learning_rate) '
          'and train into a new --workdir.')
    for name in missing:  # a field some record lacks: left out
      if isinstance(extra.get(name), spill.ColumnSpill):
        extra[name].close()
    trimmed = {name: _first_rows(array, row) for name, array in out.items()}
    return Records(
        train_labels=train_labels, test_labels=test_labels,
        original_train_labels=dataset_arrays['original_train_labels'],
        train_ids=dataset_arrays['train_ids'],
        test_ids=dataset_arrays['test_ids'],
        trial_indices=np.array(kept, np.int64), metadata=metadata,
        dataset_info=dataset_info, fingerprint=next(iter(by_fingerprint)),
        paths=paths, train_margin=trimmed.pop('train_margin', None),
        test_margin=trimmed.pop('test_margin', None), diverged=diverged_trials,
        extra={name: _first_rows(array, row) for name, array in extra.items()
               if name not in missing},
        heldout_prob_sum=(None if records.HELDOUT_PROBS in missing
                          else prob_sum),
        heldout_count=None if records.HELDOUT_PROBS in missing else prob_count,
        missing_fields=missing,
        predicted=predicted.get('splits', records.SPLITS), **trimmed)


  try:
    return fill()
  except BaseException:  # a bad record: free the spills, then say so
    for value in list(out.values()) + list(extra.values()):
      if isinstance(value, spill.ColumnSpill):
        value.close()
    raise


def _put(target, row, values):
  """Row `row` of a field: an array's row, or the spill's next row (the
  rows are filled in order)."""
  if isinstance(target, spill.ColumnSpill):
    if target.rows != row:
      raise ValueError(f'{target.what}: row {row} after {target.rows} rows.')
    target.append(values)
  else:
    target[row] = values


def _first_rows(array, rows):
  """The first `rows` rows of a field (a spill holds only those)."""
  return array if isinstance(array, spill.ColumnSpill) else array[:rows]


def mean_accuracies(loaded):
  """Mean train (in-subset), held-out and test accuracy over the trials,
  computed from the predictions the records hold (never read from their
  metadata): {'train': ..., 'heldout': ..., 'test': ...}; NaN for a split
  the records hold no predictions for (Records.predicted)."""
  masks, test = loaded.masks, loaded.test_correct
  k = len(masks)
  in_subset, right_in, right_out = bits.row_counts(masks, loaded.train_correct)
  held_out = masks.shape[1] - in_subset
  with np.errstate(invalid='ignore', divide='ignore'):
    per_trial = {
        'train': right_in / in_subset,
        'heldout': right_out / held_out,
        'test': np.count_nonzero(test, axis=1) / test.shape[1]}
  split = {'train': 'train', 'heldout': 'train', 'test': 'test'}
  return {name: (float(np.nanmean(values))
                 if k and not np.isnan(values).all()
                 and split[name] in loaded.predicted else float('nan'))
          for name, values in per_trial.items()}
