"""The layouts trials can be imported from, checked and read a chunk at a
time.

    arrays      --masks [k, n] (bool or 0/1), --train_logits [k, n, C],
                --test_logits [k, n_test, C] (float16/32), --train_labels
                [n], --test_labels [n_test]: any training loop's saved arrays
    lira        --lira_dir: the experiment root of tensorflow/privacy's
                research/mi_lira_2021 (train.py, inference.py): y_train.npy,
                and one folder per model, experiment-<expid>_<count> (or
                experiment-<seed>), holding keep.npy (bool [n]) and
                logits/<epoch, %010d>.npy ([n, 1, augmentations, C], float32);
                the last epoch's logits are read. LiRA has no test split:
                --test_logits [k, n_test, C] and --test_labels add one (rows in
                the folders' expid order)
    datamodels  --masks [M, n] bool, --margins [M, n_test] (the test
                margins), --train_labels, --test_labels, and optionally
                --train_margins [M, n] and --completed [M] bool
                (DatamodelsSource): MadryLab/datamodels' store or released
                data; the records hold what margins alone tell
                (from_margins), and without train margins no train
                predictions, so memorization is not estimated

Every file is checked from its header before any trial is written: shapes
that agree (k, n, n_test, C), numeric dtypes (an object array is refused
unread), labels within C. Values are checked as each trial is read (masks
of 0/1, finite logits); the binary (run.py) writes into a staging folder,
so a bad value found late still leaves nothing in the workdir.

What a record keeps of each trial's logits is logits.summarize's. For
LiRA's augmentations (the image and its mirror), the prediction, the
true-class probability and the margin are those of the mean of the
augmentations' logits (test-time augmentation), and the log-odds are the
mean over augmentations of each one's log-odds: LiRA's own statistic
(score.py computes one per augmentation, plot.py averages them).
"""

import os
import re

import numpy as np

from tf_memorization.core import errors
from tf_memorization.importing import logits as logits_lib
from tf_memorization.importing import npy
from tf_memorization.importing import writer as writer_lib
from tf_memorization.workdir import records


def _labels(path, what, num_classes=None):
  labels = npy.NpyRows(path, what).read_all()
  return writer_lib.check_labels(f'{what}={path}', labels, num_classes)


def _test_rows(test_logits, test_labels):
  """The --test_logits rows, or None (then no --test_labels either)."""
  if bool(test_logits) != bool(test_labels):
    raise errors.UserError('--test_logits and --test_labels go together: '
                           'give both, or neither (no test split).')
  return npy.NpyRows(test_logits, '--test_logits') if test_logits else None


def _test_split(rows, test_logits, test_labels, k, num_classes, order):
  """The test labels, checked against the --test_logits `rows` ([k,
  n_test, C]); empty without a test split."""
  if rows is None:
    return np.zeros(0, np.int64)
  if len(rows.shape) != 3 or rows.shape[0] != k or (
      rows.shape[2] != num_classes):
    raise errors.UserError(
        f'--test_logits={test_logits} has shape {rows.shape}, not '
        f'[{k}, n_test, {num_classes}] ({order}; {num_classes} classes as '
        'the train logits).')
  labels = _labels(test_labels, '--test_labels', num_classes)
  if len(labels) != rows.shape[1]:
    raise errors.UserError(
        f'--test_labels={test_labels} holds {len(labels)} labels, but '
        f'--test_logits has {rows.shape[1]} test examples.')
  return labels


def _summaries(what, read, rows, labels, num_classes, augmentations=None):
  """(pred, prob, margin, logodds) of one trial's logits, read and checked
  a block of examples at a time: read(a, b) -> logits of examples a..b-1,
  [b - a, C] or, with augmentations, [b - a, augmentations, C]."""
  parts = []
  for start in range(0, rows, logits_lib.BLOCK):
    stop = min(rows, start + logits_lib.BLOCK)
    block = read(start, stop)
    labels_here = labels[start:stop]
    if augmentations is None:
      writer_lib.check_logits(what, block, stop - start, num_classes)
      parts.append(logits_lib.summarize(block, labels_here))
      continue
    writer_lib.check_logits(what, block.reshape(-1, num_classes),
                            block.shape[0] * block.shape[1], num_classes)
    mean = block.astype(np.float64).mean(axis=1)
    pred, prob, margin, _ = logits_lib.summarize(mean, labels_here)
    count = block.shape[1]  # each augmentation's log-odds, then their mean
    logodds = logits_lib.summarize(
        block.reshape(-1, num_classes),
        np.repeat(labels_here, count))[3].reshape(-1, count).mean(axis=1)
    parts.append((pred, prob, margin, logodds))
  if not parts:
    return tuple(np.zeros(0, dt) for dt in (np.int32,) + (np.float64,) * 3)
  return tuple(np.concatenate(column) for column in zip(*parts))


class ArraysSource:
  """Masks and logits saved as .npy arrays (see the module)."""

  format = 'arrays'
  from_margins = False  # the records' predictions come from logits

  def __init__(self, masks, train_logits, test_logits, train_labels,
               test_labels, name=None):
    self.masks = npy.NpyRows(masks, '--masks')
    self.train = npy.NpyRows(train_logits, '--train_logits')
    self.test = _test_rows(test_logits, test_labels)
    if self.masks.dtype.kind not in 'biuf' or len(self.masks.shape) != 2:
      raise errors.UserError(
          f'--masks={masks} must be a bool or 0/1 array [k, n] (trials, '
          f'training examples), got shape {self.masks.shape}.')
    if len(self.train.shape) != 3:
      raise errors.UserError(
          f'--train_logits={train_logits} must be [k, n, C] (trials, '
          f'training examples, classes), got shape {self.train.shape}.')
    k, n = self.masks.shape
    self.num_classes = self.train.shape[2]
    if self.train.shape[:2] != (k, n):
      raise errors.UserError(
          f'--train_logits={train_logits} has shape {self.train.shape}, but '
          f'--masks={masks} says {k} trials of {n} training examples: '
          'give both in the same trial order, one row per trial.')
    self.train_labels = _labels(train_labels, '--train_labels',
                                self.num_classes)
    if len(self.train_labels) != n:
      raise errors.UserError(
          f'--train_labels={train_labels} holds {len(self.train_labels)} '
          f'labels, but --masks has {n} training examples.')
    self.test_labels = _test_split(self.test, test_logits, test_labels, k,
                                   self.num_classes, 'rows as --masks')
    self.num_trials = k
    self.name = name or 'arrays'
    self.notes = []
    if self.test is None:
      self.notes.append('no --test_logits: the workdir has no test split, '
                        'so the estimator computes memorization only')

  def trials(self):
    """(trial index, mask, train summaries, test summaries) of each row."""
    n, n_test = len(self.train_labels), len(self.test_labels)
    for t in range(self.num_trials):
      mask = writer_lib.check_mask(f'row {t} of --masks={self.masks.path}',
                                   self.masks[t:t + 1][0], n)
      train = _summaries(
          f'row {t} of --train_logits={self.train.path}',
          lambda a, b, t=t: self.train.block(t, a, b), n, self.train_labels,
          self.num_classes)
      test = _summaries(
          f'row {t} of --test_logits='
          f'{self.test.path if self.test else None}',
          lambda a, b, t=t: self.test.block(t, a, b), n_test,
          self.test_labels, self.num_classes)
      yield t, mask, train, test


_EXPERIMENT = re.compile(r'^experiment-(\d+)(?:_(\d+))?$')
_EPOCH = re.compile(r'^(\d+)\.npy$')


class LiraSource:
  """A LiRA experiment root (see the module)."""

  format = 'lira'
  from_margins = False

  def __init__(self, lira_dir, test_logits=None, test_labels=None,
               name=None, log=print):
    if not lira_dir or not os.path.isdir(lira_dir):
      raise errors.UserError(
          f'--lira_dir={lira_dir} is not a folder: give the experiment root '
          'of LiRA\'s train.py (its --logdir, e.g. exp/cifar10), which holds '
          'y_train.npy and the experiment-* folders.')
    self.root = lira_dir
    labels_path = os.path.join(lira_dir, 'y_train.npy')
    if not os.path.exists(labels_path):
      raise errors.UserError(
          f'{labels_path} is missing: LiRA\'s train.py saves the training '
          'labels there. Copy it from the experiment root.')
    folders = {}
    for entry in sorted(os.listdir(lira_dir)):
      match = _EXPERIMENT.match(entry)
      if match and os.path.isdir(os.path.join(lira_dir, entry)):
        index = int(match.group(1))
        if index in folders:
          raise errors.UserError(
              f'{lira_dir} holds two models numbered {index} '
              f'({folders[index]} and {entry}): keep one experiment root per '
              'run of LiRA.')
        folders[index] = entry
    if not folders:
      raise errors.UserError(
          f'{lira_dir} holds no experiment-<id>_<count> folders (one per '
          'model, as LiRA\'s train.py writes them).')
    self.folders = dict(sorted(folders.items()))
    self.models = {}
    shapes = set()
    for index, folder in self.folders.items():
      path = os.path.join(lira_dir, folder)
      keep = os.path.join(path, 'keep.npy')
      if not os.path.exists(keep):
        raise errors.UserError(
            f'{keep} is missing: without it the examples model {index} saw '
            'are unknown. Restore it, or move the folder out of '
            f'{lira_dir}.')
      logits_dir = os.path.join(path, 'logits')
      epochs = sorted((int(m.group(1)), name) for name in (
          os.listdir(logits_dir) if os.path.isdir(logits_dir) else ())
                      for m in [_EPOCH.match(name)] if m)
      if not epochs:
        raise errors.UserError(
            f'{logits_dir} holds no <epoch>.npy logits: run LiRA\'s '
            f'inference.py on {path} first, or move the folder out.')
      logits = npy.NpyRows(os.path.join(logits_dir, epochs[-1][1]),
                           f'the logits of model {index}')
      if len(logits.shape) == 4 and logits.shape[1] == 1:
        augmentations = logits.shape[2]
      elif len(logits.shape) == 3:
        augmentations = logits.shape[1]
      else:
        raise errors.UserError(
            f'{logits.path} has shape {logits.shape}, not [n, 1, '
            'augmentations, C] as LiRA\'s inference.py writes it.')
      shapes.add((logits.shape[0], augmentations, logits.shape[-1]))
      self.models[index] = (npy.NpyRows(keep, f'keep.npy of model {index}'),
                            logits, augmentations)
    if len(shapes) != 1:
      raise errors.UserError(
          f'The models of {lira_dir} have logits of different shapes '
          f'{sorted(shapes)} (examples, augmentations, classes): they are '
          'not of one run. Keep one experiment root per run.')
    n, self.augmentations, self.num_classes = shapes.pop()
    labels = _labels(labels_path, 'y_train.npy', self.num_classes)
    if len(labels) < n:
      raise errors.UserError(
          f'{labels_path} holds {len(labels)} labels, but the models\' logits '
          f'cover {n} training examples.')
    if len(labels) > n:  # LiRA's --dataset_size: the first n examples
      log(f'LiRA: the models cover the first {n} of the {len(labels)} '
          'training examples (its --dataset_size); the rest are left out.')
    self.train_labels = labels[:n]
    for index, (keep, _, _) in self.models.items():
      if keep.shape != (n,):
        raise errors.UserError(
            f'{keep.path} has shape {keep.shape}, but the logits of model '
            f'{index} cover {n} training examples.')
    self.num_trials = len(self.models)
    self.notes = []
    self.test = _test_rows(test_logits, test_labels)
    self.test_labels = _test_split(
        self.test, test_logits, test_labels, self.num_trials,
        self.num_classes, f'one row per model of {lira_dir}, in their id '
        'order')
    if self.test is None:
      self.notes.append('LiRA keeps no test split: influence is not '
                        'estimated (give --test_logits and --test_labels '
                        'to add one)')
    self.name = name or os.path.basename(os.path.abspath(lira_dir))

  def trials(self):
    n, n_test = len(self.train_labels), len(self.test_labels)
    for row, (index, (keep, logits, augmentations)) in enumerate(
        self.models.items()):
      mask = writer_lib.check_mask(keep.path, keep.read_all(), n)
      if len(logits.shape) == 4:
        read = lambda a, b, lg=logits: lg[a:b][:, 0]
      else:
        read = lambda a, b, lg=logits: lg[a:b]
      train = _summaries(logits.path, read, n, self.train_labels,
                         self.num_classes, augmentations)
      test = _summaries(
          f'row {row} of --test_logits',
          lambda a, b, r=row: self.test.block(r, a, b), n_test,
          self.test_labels, self.num_classes)
      yield index, mask, train, test


def from_margins(margin, labels):
  """(pred, prob, margin, None) of a split known only by its margins
  (z_y - max_{c != y} z_c): pred the label where the margin is positive,
  records.UNKNOWN_CLASS elsewhere (another class, which one unknown);
  prob = sigmoid(margin), the true class's probability against the
  runner-up alone (the full softmax is not in the source); no log-odds."""
  margin = np.asarray(margin, np.float64)
  pred = np.where(margin > 0, np.asarray(labels, np.int64),
                  records.UNKNOWN_CLASS).astype(np.int32)
  prob = np.where(margin >= 0, 1.0 / (1.0 + np.exp(-np.abs(margin))),
                  np.exp(-np.abs(margin)) / (1.0 + np.exp(-np.abs(margin))))
  return pred, prob, margin, None


def _check_margins(what, values, rows):
  values = np.asarray(values)
  if values.dtype.kind != 'f' or values.shape != (rows,):
    raise errors.UserError(f'{what} must be float margins of shape ({rows},), '
                           f'got {values.dtype} of shape {values.shape}.')
  if not np.isfinite(values).all():
    raise errors.UserError(
        f'{what} holds {int(np.count_nonzero(~np.isfinite(values)))} NaN or '
        'infinite margins: the model diverged, or the row was never '
        'written (a datamodels store marks finished rows in _completed.npy: '
        'give it as --completed).')
  return values


class DatamodelsSource:
  """MadryLab/datamodels' training data (see the module).

  Their store (initialize_store.py, worker.py) keeps one .npy per key:
  masks.npy (bool [M, n]: M[i, j] true if training example j was in model
  i's subset), margins.npy (float16 [M, n_test]: the correct class's logit
  minus the largest other, on flip-averaged logits) and _completed.npy
  (bool [M], the rows written); their released data names them
  train_masks_*.npy, test_margins_*.npy and train_margins_*.npy (the
  margins on the training examples, which give memorization). A row is
  trial `row` (only the completed ones with --completed). Correct is a
  positive margin.
  """

  format = 'datamodels'
  from_margins = True  # the records hold what margins alone tell

  def __init__(self, masks, margins, train_labels, test_labels,
               train_margins=None, completed=None, name=None):
    if not train_labels or not test_labels:
      raise errors.UserError(
          '--format=datamodels needs --train_labels and --test_labels: the '
          'margins are of the true class, which the labels name.')
    self.masks = npy.NpyRows(masks, '--masks')
    self.margins = npy.NpyRows(margins, '--margins')
    self.train_margins = (npy.NpyRows(train_margins, '--train_margins')
                          if train_margins else None)
    if len(self.masks.shape) != 2:
      raise errors.UserError(f'--masks={masks} must be [models, n], got '
                             f'shape {self.masks.shape}.')
    rows, n = self.masks.shape
    self.train_labels = _labels(train_labels, '--train_labels')
    self.test_labels = _labels(test_labels, '--test_labels')
    if len(self.train_labels) != n:
      raise errors.UserError(
          f'--train_labels={train_labels} holds {len(self.train_labels)} '
          f'labels, but --masks has {n} training examples.')
    if self.margins.shape != (rows, len(self.test_labels)):
      raise errors.UserError(
          f'--margins={margins} has shape {self.margins.shape}, not '
          f'[{rows}, {len(self.test_labels)}] ({rows} models as --masks, '
          f'{len(self.test_labels)} test examples as --test_labels).')
    if self.train_margins is not None and self.train_margins.shape != (
        rows, n):
      raise errors.UserError(
          f'--train_margins={train_margins} has shape '
          f'{self.train_margins.shape}, not [{rows}, {n}] as --masks.')
    self.rows = np.arange(rows)
    if completed:
      done = npy.NpyRows(completed, '--completed').read_all()
      if done.shape != (rows,) or done.dtype.kind not in 'biu':
        raise errors.UserError(
            f'--completed={completed} must be bool [{rows}] (one per '
            f'model), got {done.dtype} of shape {done.shape}.')
      self.rows = np.flatnonzero(done)
    self.num_classes = max(2, int(max(self.train_labels.max(initial=0),
                                      self.test_labels.max(initial=0))) + 1)
    self.num_trials = len(self.rows)
    self.name = name or 'datamodels'
    self.notes = []
    if self.train_margins is None:
      self.notes.append('no --train_margins: the records hold no train '
                        'predictions, so the estimator computes influence '
                        'and pairs only (no memorization)')
    if completed and len(self.rows) < rows:
      self.notes.append(f'{len(self.rows)} of the {rows} models are '
                        'completed; the others are left out')

  def trials(self):
    n = len(self.train_labels)
    for row in self.rows:
      mask = writer_lib.check_mask(f'row {row} of --masks={self.masks.path}',
                                   self.masks[row:row + 1][0], n)
      test = from_margins(_check_margins(
          f'row {row} of --margins={self.margins.path}',
          self.margins[row:row + 1][0], len(self.test_labels)),
                          self.test_labels)
      train = None
      if self.train_margins is not None:
        train = from_margins(_check_margins(
            f'row {row} of --train_margins={self.train_margins.path}',
            self.train_margins[row:row + 1][0], n), self.train_labels)
      yield int(row), mask, train, test
