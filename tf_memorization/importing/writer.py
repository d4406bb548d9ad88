"""TrialWriter: trial records from any training loop (PyTorch, JAX, ...).

    from tf_memorization import TrialWriter

    writer = TrialWriter('/work/mine', train_labels, test_labels,
                         name='resnet18-cifar10')
    for t in range(k):
      mask = ...                        # bool [n]: the examples model t saw
      ...train a model on them...
      writer.add(t, mask, train_logits, test_logits)   # [n, C], [n_test, C]

The records it writes are the train binary's (workdir/records.py), signed
the same way, with `design` None: their masks were not drawn by one of our
subset designs, so W/plan/trial_<t>.json keeps each trial's mask digest
(one file a trial: writers in many processes at once never rewrite each
other's), and every load checks each record's mask against it. W/run.json fixes the writer's fingerprint (its name and the
labels), so trials of another model or data are refused, never mixed.
What needs our trainer (ablation, removal, leave-one-out, learning-dynamics
proxies) is skipped by the estimator with one line saying why.

Every array is checked before anything is written: a mask of 0/1 values
over the n training examples, finite logits of the right shape, labels in
range. Bad input is one UserError naming the argument and the fix; the
plan entry is written before the record, so a writer killed between the
two leaves a planned trial without a record (retried by adding it again),
never a record the plan does not hold. Adding a trial that exists returns
False (a restarted loop may add it again); adding another mask under its
index is an error.
"""

import json
import os
import types

import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.importing import logits as logits_lib
from tf_memorization.workdir import imported
from tf_memorization.workdir import record_checks
from tf_memorization.workdir import records
from tf_memorization.workdir import signatures


def check_labels(what, labels, num_classes=None):
  """int64 [n] labels, or a UserError naming `what`."""
  labels = np.asarray(labels)
  if labels.dtype.hasobject or labels.ndim != 1:
    raise errors.UserError(
        f'{what} must be a 1-D array of integer class indices, got a '
        f'{labels.dtype} array of shape {labels.shape}.')
  if labels.dtype.kind == 'f' and len(labels) and np.all(
      np.isfinite(labels)) and np.all(labels == np.round(labels)):
    labels = labels.astype(np.int64)
  if labels.dtype.kind not in 'iu':
    raise errors.UserError(f'{what} must hold integer class indices, got '
                           f'{labels.dtype}.')
  labels = labels.astype(np.int64)
  if len(labels) and labels.min() < 0:
    raise errors.UserError(f'{what} holds negative classes (min '
                           f'{labels.min()}): classes are 0..C-1.')
  if num_classes is not None and len(labels) and labels.max() >= num_classes:
    raise errors.UserError(
        f'{what} holds class {labels.max()}, but the logits have '
        f'{num_classes} classes (0..{num_classes - 1}): the labels and '
        'logits are of different data.')
  return labels


def check_mask(what, mask, n):
  """bool [n] of a 0/1 mask, or a UserError naming `what`."""
  mask = np.asarray(mask)
  if mask.dtype.hasobject or mask.shape != (n,):
    raise errors.UserError(
        f'{what} must be a bool or 0/1 array of shape ({n},) (one entry per '
        f'training example), got a {mask.dtype} array of shape {mask.shape}.')
  if mask.dtype != bool:
    if mask.dtype.kind not in 'iuf':
      raise errors.UserError(f'{what} must be bool or 0/1, got {mask.dtype}.')
    bad = (mask != 0) & (mask != 1)
    if bad.any():
      raise errors.UserError(
          f'{what} holds {int(np.count_nonzero(bad))} values other than 0 '
          f'and 1 (e.g. {mask[bad][0]!r}): a mask says which training '
          'examples a model saw. Pass bool masks.')
  return mask.astype(bool)


def check_logits(what, logits, rows, num_classes):
  """Refuses logits of the wrong shape or dtype, or not finite."""
  logits = np.asarray(logits)
  if logits.dtype.hasobject or logits.dtype.kind != 'f':
    raise errors.UserError(
        f'{what} must be float logits (float16/32/64), got {logits.dtype}.')
  if logits.shape != (rows, num_classes):
    raise errors.UserError(
        f'{what} must have shape ({rows}, {num_classes}) (examples, '
        f'classes), got {logits.shape}.')
  if logits.size and not np.isfinite(logits).all():
    bad = int(np.count_nonzero(~np.isfinite(logits)))
    raise errors.UserError(
        f'{what} holds {bad} NaN or infinite values: the model diverged, or '
        'the array was not filled. Retrain it, or leave the trial out.')
  return logits


def write_labels_file(workdir, description, train_labels, test_labels,
                      train_ids, test_ids):
  """W/dataset.npz of a workdir whose trials were trained elsewhere
  (importing/): the labels and ids given, no images. Written once; later
  the same labels are checked against it.

  Args:
    workdir: the workdir.
    description: the data's identity (name, version, num_classes,
      num_train, num_test, image_shape None).
    train_labels, test_labels: int [n], [n_test].
    train_ids, test_ids: str [n], [n_test].

  Returns:
    The info dict (description and checksum), as write_dataset_file's.
  """
  arrays = {'train_labels': np.asarray(train_labels, np.int64),
            'test_labels': np.asarray(test_labels, np.int64),
            'train_ids': np.asarray(train_ids).astype(str),
            'test_ids': np.asarray(test_ids).astype(str),
            'original_train_labels': np.asarray(train_labels, np.int64)}
  info = dict(description, checksum=signatures.arrays_digest(arrays))
  path = os.path.join(workdir, files.DATASET_FILE)
  if tf.io.gfile.exists(path):
    return _same_labels(workdir, path, info)
  sources = {f'{split}_source_ids': np.full(len(arrays[f'{split}_labels']),
                                            '', dtype=str)
             for split in ('train', 'test')}
  arrays.update(sources)
  stored = dict(info, source_ids_checksum=signatures.arrays_digest(sources))
  arrays['info'] = np.array(json.dumps(stored, sort_keys=True))
  if not storage.atomic_write(path, storage.npz_bytes(arrays)):
    return _same_labels(workdir, path, info)  # another writer was first
  return info


def _same_labels(workdir, path, info):
  _, existing = records.read_dataset_file(workdir)
  if existing.get('checksum') != info['checksum']:
    raise errors.RecordError(
        f'{path} describes other labels or ids ({existing.get("name")}, '
        f'{existing.get("num_train")} train / {existing.get("num_test")} '
        f'test examples) than the ones given: its trials belong to other '
        'data. Use a new --workdir.')
  return existing


class TrialWriter:
  """Writes trial records of models trained anywhere (see the module).

  Args:
    workdir: the workdir (new, or one this writer's name wrote before:
      adding resumes).
    train_labels, test_labels: int [n], [n_test] class indices.
    num_classes: C (default: the largest label + 1; every logits array
      added must have C columns).
    name: what these models are (part of the fingerprint: trials written
      under another name are refused from this workdir).
    source: where the trials come from ('writer', 'arrays', 'lira',
      'datamodels'), kept in run.json and each record.
    train_ids, test_ids: each example's id (default: its index).
  """

  def __init__(self, workdir, train_labels, test_labels, num_classes=None,
               name='imported', source='writer', train_ids=None,
               test_ids=None):
    if not workdir:
      raise errors.UserError('TrialWriter needs a workdir.')
    self.workdir = workdir
    if num_classes is None:
      given = [check_labels(what, labels) for what, labels in
               (('train_labels', train_labels), ('test_labels', test_labels))]
      num_classes = max(int(labels.max(initial=0)) for labels in given) + 1
      num_classes = max(num_classes, 2)
    self.num_classes = errors.integer('num_classes', num_classes, minimum=2)
    self.train_labels = check_labels('train_labels', train_labels,
                                     self.num_classes)
    self.test_labels = check_labels('test_labels', test_labels,
                                    self.num_classes)
    self.n, self.n_test = len(self.train_labels), len(self.test_labels)
    if not self.n:
      raise errors.UserError('train_labels is empty: nothing to estimate.')
    self.source = {'source': str(source), 'name': str(name)}
    ids = [np.arange(length).astype(str) if given is None else
           np.asarray(given).astype(str)
           for given, length in ((train_ids, self.n),
                                 (test_ids, self.n_test))]
    for given, split, length in zip(ids, ('train_ids', 'test_ids'),
                                    (self.n, self.n_test)):
      if given.shape != (length,):
        raise errors.UserError(f'{split} must have one id per example '
                               f'({length}), got shape {given.shape}.')
    self.description = {'name': str(name), 'version': imported.DATA_VERSION,
                        'num_classes': self.num_classes, 'num_train': self.n,
                        'num_test': self.n_test, 'image_shape': None}
    storage.check_writable(workdir)
    self.info = write_labels_file(workdir, self.description,
                                          self.train_labels,
                                          self.test_labels, *ids)
    self.dataset = {key: self.info[key] for key in
                    ('name', 'version', 'num_classes', 'num_train',
                     'num_test', 'checksum', 'image_shape')}
    self.fingerprint = records.fingerprint(
        {'imported': self.source, 'data': self.info['checksum']})
    fixed = records.fix_config(workdir, self.fingerprint,
                               {'imported': self.source,
                                'dataset': self.dataset})
    if fixed != self.fingerprint:
      raise errors.RecordError(
          f'{records.run_file_path(workdir)} fixes the config {fixed}, not '
          f'the one of these imported trials ({self.fingerprint}: '
          f'{self.source}): the workdir holds other models. Use a new '
          '--workdir.')
    self.written = 0

  def add(self, trial_index, mask, train_logits, test_logits, seed=0):
    """Writes trial `trial_index`'s record.

    Args:
      trial_index: t >= 0, unique in the workdir.
      mask: bool or 0/1 [n], the training examples the model saw.
      train_logits: float [n, C], the model's logits on every training
        example (held-out ones included).
      test_logits: float [n_test, C].
      seed: the trial's seed, if known (kept in the record).

    Returns:
      True, or False when the record exists already with this mask.
    """
    t = errors.integer('trial_index', trial_index, minimum=0)
    seed = errors.integer('seed', seed, minimum=0)
    mask = check_mask(f'the mask of trial {t}', mask, self.n)
    train_logits = check_logits(f'the train logits of trial {t}',
                                train_logits, self.n, self.num_classes)
    test_logits = check_logits(f'the test logits of trial {t}', test_logits,
                               self.n_test, self.num_classes)
    train = logits_lib.summarize(train_logits, self.train_labels)
    test = logits_lib.summarize(test_logits, self.test_labels)
    return self.add_summaries(t, mask, train, test, seed)

  def add_summaries(self, t, mask, train, test, seed=0, from_margins=False):
    """add() from (pred, prob, margin, logodds) of each split (checked
    logits summarized: logits.summarize; logodds None where unknown).
    `train` None: the source has no train predictions (the record says
    so). `from_margins`: pred and prob come from margins alone
    (sources.from_margins)."""
    self._plan(t, mask, seed)
    held_out = ~mask
    # The accuracies as the trainer records them (readers derive theirs
    # from the predictions); one of no examples is left out.
    metrics = {'subset_size': int(np.count_nonzero(mask))}
    if train is not None:
      correct = train[0] == self.train_labels
      metrics['heldout_accuracy'] = (float(correct[held_out].mean())
                                     if held_out.any() else float('nan'))
      if mask.any():
        metrics['train_accuracy'] = float(correct[mask].mean())
    if self.n_test:
      metrics['test_accuracy'] = float(np.mean(test[0] == self.test_labels))
    train = train if train is not None else (None,) * 4
    result = types.SimpleNamespace(
        train_pred=train[0], train_prob=train[1], train_margin=train[2],
        train_logodds=train[3], test_pred=test[0], test_prob=test[1],
        test_margin=test[2], test_logodds=test[3], metrics=metrics)
    metadata = {'fingerprint': self.fingerprint, 'seed': seed,
                'dataset': self.dataset, 'design': None,
                'imported': self.source}
    if from_margins:
      metadata['from_margins'] = True
    written = records.write_record(self.workdir, t, mask, result, metadata)
    if written is False:
      return False
    self.written += 1
    return True

  def _plan(self, t, mask, seed):
    """Writes trial t's plan entry (W/plan/trial_<t>.json: its mask
    digest and seed) unless it exists, created exclusively: writers in
    many processes at once each write their own trials' entries, and a
    second writer of trial t with another mask is refused."""
    path = record_checks.plan_entry_path(self.workdir, t)
    job = {'index': t, 'mask': records.mask_digest(mask), 'seed': seed}
    text = json.dumps(job, sort_keys=True)
    if storage.atomic_write(path, text.encode()):
      return
    if storage.read_json(path) != job:
      raise errors.UserError(
          f'Trial {t} of {self.workdir} was written with another mask or '
          f'seed ({path}): give each model its own trial index.')

  def close(self):
    """Nothing is buffered: every add is on disk when it returns."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
