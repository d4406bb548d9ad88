"""A workdir's trials written out in the LiRA and datamodels layouts.

    export_trials(workdir, path, 'lira' | 'datamodels', log)

(what `compare --export=DIR --format=lira|datamodels` does; `--format=paper`
writes the estimates in the paper's released schema, published/).

lira        DIR/y_train.npy (int64 [n]); per trial t of k,
            DIR/experiment-<t>_<k>/keep.npy (bool [n]) and
            DIR/experiment-<t>_<k>/logits/0000000000.npy (float32
            [n, 1, 1, C]); and, LiRA having no test split, DIR/y_test.npy
            and DIR/test_logits.npy ([k, n_test, C], rows in trial order),
            which import_trials --format=lira takes as --test_labels and
            --test_logits. LiRA's score.py and plot.py run on DIR as on
            their own experiments.
datamodels  DIR/masks.npy (bool [k, n]), DIR/margins.npy (float16
            [k, n_test]: the test margins), DIR/train_margins.npy (float16
            [k, n], as the released data's train_margins; not written for
            records without train predictions), DIR/_completed.npy
            (bool [k]), DIR/train_labels.npy and DIR/test_labels.npy. A
            margin is positive where the prediction is correct (datamodels'
            rule): a tie the model broke toward the label is written as
            the smallest positive float16.

A record keeps a summary of each model's logits (prediction, true-class
probability, margin, log-odds), not the logits: the exported logits are
logits.equivalent_logits of that summary, whose prediction, margin and
log-odds (LiRA's score) are the record's. Re-imported, they give records
with the same predictions, margins and log-odds, and so the same
estimates. Every record is checked as the estimator checks it (loaded a
chunk of trials at a time, so memory holds one chunk). The folder is
written whole through a staging folder: a failure leaves no half export.
"""

import json
import os

import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import progress as progress_lib
from tf_memorization.core import storage
from tf_memorization.importing import logits as logits_lib
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

FORMATS = ('lira', 'datamodels')
# Trials loaded (and checked) at once: memory holds one chunk's [chunk, n].
CHUNK = 64
# The file of the export's description (written last: a folder holding it
# is a whole export of ours, and may be replaced by the next).
MARKER = 'tf_memorization_export.json'


def _chunks(workdir, indices, fields):
  for start in range(0, len(indices), CHUNK):
    yield loading.load(workdir, predictions=True, margins=True,
                       trial_indices=list(indices[start:start + CHUNK]),
                       fields=fields,
                       missing_fix='Export needs records of format 3 or '
                       'later (with log-odds): retrain into a new workdir.')


def export_trials(workdir, path, fmt, log=print):
  """Writes `workdir`'s trials to the folder `path` in layout `fmt`.

  Returns:
    {'format', 'path', 'trials'}.
  """
  errors.choice('--format', fmt, FORMATS)
  if not path:
    raise errors.UserError(f'--export is required with --format={fmt}: the '
                           'folder the trials go to.')
  if '://' in path:
    raise errors.UserError(f'--export={path}: the {fmt} layout is written '
                           'to a local folder (its arrays are filled in '
                           'place); write it here, then copy it.')
  dataset, info = records.read_dataset_file(workdir)
  found = records.list_records(workdir)
  if not found:
    raise errors.RecordError(f'{workdir} holds no trial records to export.')
  indices = np.array(sorted(found), np.int64)
  k = len(indices)
  # What the records hold (each is checked when its chunk loads, and all
  # must agree with the first).
  first = records.read_metadata(found[int(indices[0])])
  has_train = 'train' in first.get('predicted', records.SPLITS)
  if fmt == 'lira' and (first.get('from_margins') or not has_train):
    raise errors.UserError(
        f'{workdir} holds trials imported from margins'
        + ('' if has_train else ' without train predictions') +
        ': LiRA\'s layout needs logits (or log-odds) of every training '
        'example, which margins do not give. Export them with '
        '--format=datamodels.')
  num_classes = int(info['num_classes'])
  train_labels, test_labels = dataset['train_labels'], dataset['test_labels']
  n, n_test = len(train_labels), len(test_labels)
  progress = progress_lib.Progress(k, every_seconds=10)
  with storage.staged_output(path, '--export', MARKER) as stage:
    if fmt == 'lira':
      np.save(os.path.join(stage, 'y_train.npy'), train_labels)
      np.save(os.path.join(stage, 'y_test.npy'), test_labels)
      test_file = np.lib.format.open_memmap(
          os.path.join(stage, 'test_logits.npy'), mode='w+',
          dtype=np.float32, shape=(k, n_test, num_classes))
      fields = ('train_logodds', 'test_logodds')
    else:
      layout = [('masks', bool, (k, n)),
                ('margins', np.float16, (k, n_test))]
      if has_train:  # none written for records without train predictions
        layout.append(('train_margins', np.float16, (k, n)))
      files = {name: np.lib.format.open_memmap(
          os.path.join(stage, f'{name}.npy'), mode='w+', dtype=dtype,
          shape=shape) for name, dtype, shape in layout}
      np.save(os.path.join(stage, '_completed.npy'), np.ones(k, bool))
      np.save(os.path.join(stage, 'train_labels.npy'), train_labels)
      np.save(os.path.join(stage, 'test_labels.npy'), test_labels)
      fields = ()
    row = 0
    for loaded in _chunks(workdir, indices, fields):
      for i, t in enumerate(loaded.trial_indices):
        if fmt == 'lira':
          folder = os.path.join(stage, f'experiment-{t}_{k}')
          tf.io.gfile.makedirs(os.path.join(folder, 'logits'))
          np.save(os.path.join(folder, 'keep.npy'), loaded.masks[i])
          _lira_logits(os.path.join(folder, 'logits', f'{0:010d}.npy'),
                       loaded, i, train_labels, num_classes)
          test_file[row] = logits_lib.equivalent_logits(
              loaded.test_pred[i], loaded.test_prob[i], loaded.test_margin[i],
              loaded.extra['test_logodds'][i], test_labels, num_classes)
        else:
          files['masks'][row] = loaded.masks[i]
          files['margins'][row] = _positive_if_correct(
              loaded.test_margin[i], loaded.test_correct[i])
          if has_train:
            files['train_margins'][row] = _positive_if_correct(
                loaded.train_margin[i], loaded.train_correct[i])
        row += 1
        if progress.due(row):
          log(f'  export: {row}/{k} trials, ETA {progress.eta(row)}')
    if fmt == 'lira':
      test_file.flush()
      del test_file
    else:
      for array in files.values():
        array.flush()
      del files
    storage.atomic_write_text(os.path.join(stage, MARKER), json.dumps({
        'format': fmt, 'workdir': workdir, 'trials': [int(t) for t in indices],
        'train_predictions': has_train,
        'dataset': {key: info.get(key) for key in ('name', 'version',
                                                   'num_classes', 'checksum')}},
        sort_keys=True, indent=1))
  log(f'Exported {k} trials of {workdir} in the {fmt} layout to {path}.')
  return {'format': fmt, 'path': path, 'trials': k}


def _positive_if_correct(margin, correct):
  """Margins where positive means correct, as datamodels counts: a tie
  (margin 0) the model broke toward the label becomes the smallest
  positive float16 (6e-8)."""
  tie = correct & (margin == 0)
  if not tie.any():
    return margin
  return np.where(tie, np.float16(2.0 ** -24), margin)


def _lira_logits(path, loaded, i, labels, num_classes):
  """One trial's train logits as LiRA's inference.py saves them
  ([n, 1, augmentations = 1, C] float32), written a block at a time."""
  n = len(labels)
  out = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32,
                                  shape=(n, 1, 1, num_classes))
  for start in range(0, n, logits_lib.BLOCK):
    part = slice(start, min(n, start + logits_lib.BLOCK))
    out[part, 0, 0] = logits_lib.equivalent_logits(
        loaded.train_pred[i, part], loaded.train_prob[i, part],
        loaded.train_margin[i, part],
        loaded.extra['train_logodds'][i, part], labels[part], num_classes)
  out.flush()
  del out
