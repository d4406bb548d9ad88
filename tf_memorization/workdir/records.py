"""Trial records: the contract between the train and estimate binaries.

Layout of a workdir W (local path or any tf.io.gfile URL, e.g. gs://):

    W/dataset.npz                 labels and ids of both splits (written once)
    W/operative_config.gin        the gin config the trials ran with
    W/trials/trial_000042.npz     one record per trial, written atomically

A record is an .npz (read with allow_pickle=False: nothing in a workdir is ever
executed) holding

    mask          uint8, np.packbits of the bool [n] training subset
    train_pred    int16/int32 [n]   predicted class of every training example
    train_prob    float16 [n]       softmax probability of the true class
    train_margin  float16 [n]       true-class logit minus the largest other
    test_pred, test_prob, test_margin   the same on the n_test test examples
    train_logodds, test_logodds   float16: z_y − log Σ_{y'≠y} exp z_y', the
                  log-odds of the true class (LiRA's logit-scaled
                  confidence), exact where a float16 probability is 1
    train_csl, train_final_loss        float16 [n]  learning-dynamics proxies
    train_learned_epoch, train_forgetting, train_visits   int16/int32 [n]
                  (dynamics.py), for the subset's examples (NaN / −1 for
                  the others); absent with TrialTrainer.record_dynamics =
                  False
    heldout_probs float16 [n − |subset|, C]: the class probabilities of
                  the held-out training examples, in index order (only with
                  TrialTrainer.record_heldout_probs = True)
    Imported from margins alone (metadata from_margins): pred is the label
    or UNKNOWN_CLASS, prob sigmoid(margin); a split without predictions
    (metadata predicted = ['test']) holds empty pred, prob and margin.
    metadata      a JSON string: trial_index, seed, fingerprint, dataset,
                  metrics, library versions, time, host, the sha256 of each
                  array above (member_digests) and a sha256 of all of that
                  (checksum), so a truncated or altered record is detected.

Format 4 signs each array on its own: a reader that needs a few members (the
estimator at ImageNet's size needs a third of each record's bytes) maps the
file, verifies the metadata's checksum and the digests of the members it
uses, and reads nothing else (read_record's `members`). Format 3 added the
log-odds, proxies and held-out probabilities; records of formats 2 and 3 (one
sha256 over every array) still load, read whole, and a reader that needs a
field they lack says so (loading.load's `fields`).

Records are written to a temporary name and renamed, so a reader never sees a
partial record and a killed writer leaves at most a `*.tmp-*` file behind. A
write that fails for lack of space (ENOSPC, EDQUOT, or EFBIG under a file size
limit) removes its temporary file and raises NoSpaceError, which the binaries
print as one line; files written before are kept.

Reading checks everything a workdir could get wrong: a truncated, corrupt or
altered record (zip structure, then the sha256 in its metadata), arrays whose
shapes do not match W/dataset.npz, records of several configs. Every error is
a RecordError naming the file and what to do (see fix_hint).
"""

import hashlib
import io
import json
import os
import platform
import re
import socket
import struct
import time
import zipfile

import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.workdir import signatures

FORMAT_VERSION = 4
# Formats whose checksum covers arrays and metadata (record_checksum).
SIGNED_VERSIONS = (2, 3)
_RECORD_RE = re.compile(r'^trial_(\d{6,})\.npz$')
# The arrays every record holds (what every load reads and checks).
CORE_FIELDS = ('mask', 'train_pred', 'train_prob', 'train_margin',
               'test_pred', 'test_prob', 'test_margin')
LOGODDS_FIELDS = ('train_logodds', 'test_logodds')
DYNAMICS_FIELDS = ('train_csl', 'train_final_loss', 'train_learned_epoch',
                   'train_forgetting', 'train_visits')
HELDOUT_PROBS = 'heldout_probs'
SPLITS = ('train', 'test')
# A predicted class of a record imported from margins alone (importing/,
# metadata from_margins): another class than the label, which one unknown.
UNKNOWN_CLASS = -1
# Fields a record of format 3 may hold; every one is checked when present.
OPTIONAL_FIELDS = LOGODDS_FIELDS + DYNAMICS_FIELDS + (HELDOUT_PROBS,)
_DATASET_FIELDS = ('train_labels', 'test_labels', 'train_ids', 'test_ids',
                   'original_train_labels')
# Optional (workdirs written since format 3): each example's id in its source.
_SOURCE_FIELDS = ('train_source_ids', 'test_source_ids')


RecordError = errors.RecordError  # the error of every check below


def record_path(workdir, trial_index):
  return os.path.join(workdir, files.TRIALS_DIR, f'trial_{trial_index:06d}.npz')


def record_exists(workdir, trial_index):
  return tf.io.gfile.exists(record_path(workdir, trial_index))


def fingerprint(config):
  """A short stable hash of a JSON-serialisable config."""
  text = json.dumps(config, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def fix_hint(path):
  """What to do about a bad file `path` of a workdir, as a sentence."""
  name = os.path.basename(path)
  match = _RECORD_RE.match(name)
  parent = os.path.dirname(os.path.dirname(path))
  if match and os.path.basename(os.path.dirname(path)) == files.TRIALS_DIR:
    if '/experiments/' in path.replace(os.sep, '/'):  # experiments.py's
      return ('Delete it and run the estimate binary again with the same '
              'flags: it retrains that model and keeps the others.')
    return (f'Delete it and rerun the train binary (python -m '
            f'tf_memorization.train --workdir={parent} with the same flags) '
            f'to retrain trial {int(match.group(1))}; the other trials are '
            'kept.')
  if name == files.DATASET_FILE:
    return ('Delete it and rerun the train binary with this --workdir: it '
            'writes it again from the data and keeps the trials.')
  return 'Delete it and run the binary that wrote it again.'


# A record's metadata (and dataset.npz's info) is a few KB.
METADATA_MAX_BYTES = 1 << 20


def _json_field(path, arrays, field):
  """The JSON dict stored as the string array `field` of an .npz."""
  try:
    stored = arrays.pop(field)
  except KeyError as e:
    raise RecordError(f'{path} lacks its {field!r}: not a file of this '
                      f'format. {fix_hint(path)}') from e
  if stored.dtype.kind != 'U' or stored.shape != ():
    raise RecordError(f'{path} holds an unreadable {field!r} (a {stored.dtype} '
                      f'array of shape {stored.shape}, not one string): it was '
                      f'altered or corrupted. {fix_hint(path)}')
  value = storage.parse_json(str(stored), f'{path} ({field!r})',
                             fix_hint(path), max_bytes=METADATA_MAX_BYTES)
  if not isinstance(value, dict):
    raise RecordError(f'{path}: its {field!r} is not a JSON object: it was '
                      f'altered or corrupted. {fix_hint(path)}')
  return value


def _library_versions():
  import keras  # pylint: disable=g-import-not-at-top
  return {'tensorflow': tf.__version__, 'keras': keras.__version__,
          'numpy': np.__version__, 'python': platform.python_version()}


def pred_dtype(num_classes):
  return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


# Written margins are clipped to float16's range, so that only a diverged
# model (NaN) leaves a non-finite value in a record.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def diverged_reason(arrays, metrics, num_classes):
  """Why a trial's model is unusable (a sentence), or None when it is not.

  A model diverged when its predictions hold NaN or infinite values, its
  final loss is not finite, or it predicts one class for every train and
  test example although that class is not every label (e.g. after a
  learning rate far too high: every logit NaN, argmax 0).

  Args:
    arrays: the record's arrays (train_/test_ pred, prob, margin).
    metrics: the trial's metrics (final_loss, accuracies).
    num_classes: classes of the dataset.
  """
  for field in ('train_prob', 'test_prob', 'train_margin', 'test_margin'):
    values = np.asarray(arrays[field])
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
      return f'{bad} of its {field} values are NaN or infinite'
  loss = metrics.get('final_loss')
  if isinstance(loss, (int, float)) and not np.isfinite(loss):
    return f'its final training loss is {loss}'
  predictions = np.concatenate([np.asarray(arrays['train_pred']).ravel(),
                                np.asarray(arrays['test_pred']).ravel()])
  if num_classes > 1 and len(predictions) and (
      predictions.min() == predictions.max()):
    accuracies = [metrics.get(k) for k in ('train_accuracy', 'test_accuracy')]
    if not all(a == 1.0 for a in accuracies):
      return (f'it predicts class {int(predictions[0])} for every train and '
              'test example')
  return None


def write_record(workdir, trial_index, mask, result, metadata):
  """Writes trial `trial_index`'s record atomically.

  Args:
    workdir: the run's workdir.
    trial_index: t.
    mask: bool [n] training subset of the trial.
    result: a training.TrialResult.
    metadata: JSON-serialisable dict; must hold 'fingerprint', 'seed',
      'dataset' (with num_classes) and 'design': the SubsetDesign's
      fingerprint_fields() when the mask is that design's mask of trial t,
      or None when a plan chose it (experiments). Versions, time, host, the
      diverged flag and the checksum are added.

  Returns:
    The record's metadata (with its diverged flag), or False when a record
    of that trial exists already (another worker wrote it first).
  """
  missing = [k for k in ('fingerprint', 'seed', 'dataset', 'design')
             if k not in metadata]
  if missing:
    raise ValueError(f'write_record: metadata lacks {missing}.')
  num_classes = int(metadata['dataset']['num_classes'])
  dtype = pred_dtype(num_classes)

  def margin(values):
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)

  predicted = [split for split in SPLITS
               if getattr(result, f'{split}_pred') is not None]
  arrays = {'mask': np.packbits(np.asarray(mask, bool))}
  for split in SPLITS:  # a split without predictions: empty arrays
    known = split in predicted
    arrays.update({
        f'{split}_pred': (getattr(result, f'{split}_pred').astype(dtype)
                          if known else np.zeros(0, dtype)),
        f'{split}_prob': (getattr(result, f'{split}_prob').astype(np.float16)
                          if known else np.zeros(0, np.float16)),
        f'{split}_margin': (margin(getattr(result, f'{split}_margin'))
                            if known else np.zeros(0, np.float16))})
  arrays.update(_optional_arrays(result, mask, margin))
  metadata = dict(metadata)
  if predicted != list(SPLITS):
    metadata['predicted'] = predicted
  metadata.update({
      'format_version': FORMAT_VERSION,
      'trial_index': int(trial_index),
      'num_train': int(len(mask)),
      'num_test': int(len(result.test_pred) if 'test' in predicted
                      else metadata['dataset']['num_test']),
      'metrics': result.metrics,
      'diverged': diverged_reason(arrays, result.metrics, num_classes),
      'versions': _library_versions(),
      'written_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'host': socket.gethostname(),
  })
  metadata = signatures.sign(arrays, metadata)
  arrays['metadata'] = np.array(json.dumps(metadata, sort_keys=True))
  if not storage.atomic_write(record_path(workdir, trial_index),
                              storage.npz_bytes(arrays)):
    return False
  return metadata


def _optional_arrays(result, mask, clip16):
  """The format-3 fields `result` has, in their stored dtypes."""
  arrays = {}
  for field in LOGODDS_FIELDS:
    value = getattr(result, field, None)
    if value is not None:
      arrays[field] = clip16(np.asarray(value, np.float64))
  proxies = getattr(result, 'dynamics', None)
  if proxies is not None:
    for field in DYNAMICS_FIELDS:
      value = np.asarray(proxies[field])
      if value.dtype.kind == 'f':
        arrays[field] = clip16(value)  # NaN outside the subset stays NaN
      else:
        small = len(value) == 0 or value.max() <= np.iinfo(np.int16).max
        arrays[field] = value.astype(np.int16 if small else np.int32)
  probs = getattr(result, 'heldout_probs', None)
  if probs is not None:
    probs = np.asarray(probs)
    if len(probs) != int(np.count_nonzero(~np.asarray(mask, bool))):
      raise ValueError('write_record: heldout_probs needs one row per '
                       'held-out training example.')
    arrays[HELDOUT_PROBS] = probs.astype(np.float16)
  return arrays


def _upgrade_hint(path):
  workdir = os.path.dirname(os.path.dirname(path))
  return (f'Retrain it ({fix_hint(path)}), or, if you trust the files of '
          'this workdir, re-sign its format-1 records with python -m '
          f'tf_memorization.inspect_workdir --workdir={workdir} '
          '--upgrade_records (it checks every array, mask and seed first).')


def _parse_record(path, payload):
  """(arrays, metadata) of a record's bytes, structure checked, no checksum."""
  try:
    # The sha256 checks the arrays; only the metadata's CRC is checked here.
    arrays = storage.npz_views(payload,
                               unchecked=CORE_FIELDS + OPTIONAL_FIELDS)
  except (OSError, ValueError, EOFError, KeyError, struct.error,
          zipfile.BadZipFile) as e:
    raise storage.npz_error(path, e, fix_hint(path)) from e
  if arrays is None:
    arrays = storage.load_npz(path, payload, fix_hint(path))
  missing = [f for f in CORE_FIELDS + ('metadata',) if f not in arrays]
  if missing:
    raise RecordError(f'{path} lacks {missing}: not a trial record of this '
                      f'format. {fix_hint(path)}')
  return arrays, _json_field(path, arrays, 'metadata')


def read_record(path, allow_format_1=False, members=None):
  """Reads and verifies one record: (arrays dict, metadata dict).

  Format 4: the checksum covers the metadata, which holds each array's
  digest; with `members` (names), only those arrays are read (the file is
  mapped: nothing else is read from disk), verified and returned. Formats
  2 and 3: one checksum over all arrays and the metadata; the record is
  read whole. Records of format 1, whose checksum covers only the arrays,
  are refused unless `allow_format_1` (the upgrade path). The arrays are
  read-only views of the file's bytes.
  """
  payload = (storage.read_bytes(path, fix_hint(path)) if members is None
             else storage.mapped_bytes(path, fix_hint(path)))
  arrays, metadata = _parse_record(path, payload)
  version = metadata.get('format_version')
  if version in signatures.MEMBER_SIGNED_VERSIONS:
    return _verified_members(path, arrays, metadata, members), metadata
  if version == 1 and allow_format_1:
    expected = signatures.arrays_digest(arrays)
  elif version in SIGNED_VERSIONS:
    expected = signatures.record_checksum(arrays, metadata)
  elif version == 1:
    raise RecordError(
        f'{path} is a record of format 1 (written by an earlier version), '
        'whose checksum does not cover its metadata (trial index, seed, '
        f'fingerprint): it is not trusted. {_upgrade_hint(path)}')
  else:
    raise RecordError(
        f'{path} is a record of format {version!r}, which this version of '
        f'tf_memorization (format {FORMAT_VERSION}) does not read. Upgrade '
        f'tf_memorization, or delete it: {fix_hint(path)}')
  if metadata.get('checksum') != expected:
    raise _checksum_error(path)
  return arrays, metadata


def _checksum_error(path, what='its arrays and metadata'):
  return RecordError(f'{path} fails its checksum (the sha256 in its '
                     f'metadata, over {what}): it was altered or corrupted '
                     f'after it was written. {fix_hint(path)}')


def _verified_members(path, arrays, metadata, members):
  """The arrays of a format-4 record named by `members` (all when None),
  each checked against its digest, the metadata against its checksum."""
  digests = metadata.get('member_digests')
  if (metadata.get('checksum') != signatures.metadata_checksum(metadata) or
      not isinstance(digests, dict) or set(digests) != set(arrays)):
    raise _checksum_error(path)
  names = list(arrays) if members is None else [m for m in members
                                                 if m in arrays]
  for name in names:
    if signatures.member_digest(name, arrays[name]) != digests[name]:
      raise _checksum_error(path, f'its {name} array')
  return {name: arrays[name] for name in names}


def read_metadata(path):
  """Only the metadata of a record (cheap: reads the zip's metadata member
  alone; no checksum verification)."""
  try:
    hint = fix_hint(path)
    source = (io.BytesIO(storage.read_bytes(path, hint)) if '://' in path
              else storage.open_regular(path, hint))
    with source, zipfile.ZipFile(source) as archive:
      # A string of at most METADATA_MAX_BYTES characters (4 bytes each in
      # a numpy str array), checked before anything is decompressed.
      declared = archive.getinfo('metadata.npy').file_size
      if declared > 4 * METADATA_MAX_BYTES + 1024:
        raise RecordError(f'{path} declares a metadata member of {declared:,} '
                          'bytes, more than a record ever holds: it was '
                          f'altered or not written by this package. {hint}')
      with archive.open('metadata.npy') as member:
        arrays = {'metadata': np.lib.format.read_array(member,
                                                       allow_pickle=False)}
  except RecordError:
    raise
  except (OSError, ValueError, EOFError, KeyError, struct.error,
          zipfile.BadZipFile, tf.errors.OpError) as e:
    raise storage.npz_error(path, e, fix_hint(path)) from e
  return _json_field(path, arrays, 'metadata')


def list_records(workdir):
  """{trial_index: path} of the finished records in `workdir`."""
  directory = os.path.join(workdir, files.TRIALS_DIR)
  if not tf.io.gfile.isdir(directory):
    return {}
  found = {}
  for name in tf.io.gfile.listdir(directory):
    match = _RECORD_RE.match(name)
    if match:
      found[int(match.group(1))] = os.path.join(directory, name)
  return dict(sorted(found.items()))


# --------------------------------------------------------------------------
# The workdir's config: fixed by the first process, atomically


def run_file_path(workdir):
  return os.path.join(workdir, files.RUN_FILE)


_RUN_FILE_FIX = ('If every record in the workdir is of the same config, '
                 'delete it; the train binary writes it again from the '
                 'records.')


def read_run_file(workdir):
  """W/run.json as a dict ({'fingerprint': ..., ...}), or None if absent."""
  path = run_file_path(workdir)
  if not tf.io.gfile.exists(path):
    return None
  value = storage.read_json(path, _RUN_FILE_FIX, METADATA_MAX_BYTES)
  if not isinstance(value, dict) or not isinstance(value.get('fingerprint'),
                                                   str):
    raise RecordError(
        f'{path} is not a run file of this format (no fingerprint): it was '
        f'altered or corrupted. {_RUN_FILE_FIX}')
  return value


def fix_config(workdir, fingerprint, description=None):
  """Makes `fingerprint` the workdir's config unless one is fixed already.

  The first process into a workdir writes W/run.json with an exclusive
  create (atomic_write): of several processes starting at the same moment
  with different configs exactly one wins, and every later process compares
  its fingerprint with the file before it trains.

  Args:
    workdir: the run's workdir.
    fingerprint: this process's config fingerprint.
    description: JSON-serialisable details kept beside it (dataset, design).

  Returns:
    The fixed fingerprint (this one, or the one another process fixed).
  """
  payload = json.dumps({'fingerprint': fingerprint,
                        'description': description,
                        'written_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                        'host': socket.gethostname()}, sort_keys=True,
                       indent=1)
  storage.atomic_write(run_file_path(workdir), payload.encode())
  return read_run_file(workdir)['fingerprint']


# --------------------------------------------------------------------------
# W/dataset.npz


def write_dataset_file(workdir, dataset, train_labels=None, write=True):
  """Writes W/dataset.npz once; afterwards checks the workdir's data matches.

  Args:
    workdir: the run's workdir.
    dataset: a data.Dataset (its train labels are the original ones).
    train_labels: the labels the trials train on, when they differ from the
      dataset's (label-noise injection).
    write: False to only compute the info (non-chief workers).

  Returns:
    The info dict (dataset description and a checksum of labels and ids).
  """
  train_labels = dataset.train.labels if train_labels is None else train_labels
  arrays = {'train_labels': np.asarray(train_labels, np.int64),
            'test_labels': np.asarray(dataset.test.labels, np.int64),
            'train_ids': np.asarray(dataset.train.ids).astype(str),
            'test_ids': np.asarray(dataset.test.ids).astype(str),
            'original_train_labels': np.asarray(dataset.train.labels, np.int64)}
  info = dict(dataset.describe(),
              checksum=signatures.arrays_digest(arrays))
  path = os.path.join(workdir, files.DATASET_FILE)
  if not write:
    return info
  # Each example's id in its source (published/join.py joins the released
  # scores by it). Checked by a checksum of its own, outside the data's identity, so
  # that workdirs written before it still match their data.
  sources = {f'{split}_source_ids': _source_ids(getattr(dataset, split))
             for split in ('train', 'test')}
  if tf.io.gfile.exists(path):
    existing = _json_field(
        path, storage.load_npz(path, hint=fix_hint(path)), 'info')
    if existing.get('checksum') != info['checksum']:
      raise RecordError(
          f'{path} describes other data ({existing.get("name")}, '
          f'{existing.get("num_train")} train examples) than this run '
          f'({info["name"]}, {info["num_train"]}). Use a new --workdir.')
    return info
  arrays.update(sources)
  stored = dict(info, source_ids_checksum=signatures.arrays_digest(sources))
  arrays['info'] = np.array(json.dumps(stored, sort_keys=True))
  storage.atomic_write(path, storage.npz_bytes(arrays))
  return info


def _check_dataset_dtypes(path, arrays, sources):
  """Refuses labels that are not integers and ids that are not strings (a
  re-signed dataset.npz: its checksum is a plain sha256)."""
  for field in ('train_labels', 'test_labels', 'original_train_labels'):
    if arrays[field].dtype.kind not in 'iu':
      raise RecordError(
          f'{path}: its {field} are {arrays[field].dtype}, not integer class '
          f'indices in [0, num_classes). {fix_hint(path)}')
  for field, ids in [(f, arrays[f]) for f in ('train_ids', 'test_ids')] + (
      list(sources.items())):
    if ids.dtype.kind != 'U':
      raise RecordError(f'{path}: its {field} are {ids.dtype}, not strings. '
                        f'{fix_hint(path)}')


def _source_ids(split):
  ids = getattr(split, 'source_ids', None)
  if ids is None:
    return np.full(len(split), '', dtype=str)
  return np.asarray(ids).astype(str)


def read_dataset_file(workdir):
  path = os.path.join(workdir, files.DATASET_FILE)
  if not tf.io.gfile.exists(path):
    raise RecordError(f'{path} is missing: {workdir} is not a workdir of the '
                      'train binary (run python -m tf_memorization.train '
                      f'--workdir={workdir} first).')
  arrays = storage.load_npz(path, hint=fix_hint(path))
  info = _json_field(path, arrays, 'info')
  missing = [f for f in _DATASET_FIELDS if f not in arrays]
  if missing:
    raise RecordError(f'{path} lacks {missing}: not a dataset file of this '
                      f'format. {fix_hint(path)}')
  sources = {f: arrays.pop(f) for f in _SOURCE_FIELDS if f in arrays}
  if info.get('checksum') != signatures.arrays_digest(arrays) or (
      sources and info.get('source_ids_checksum') !=
      signatures.arrays_digest(sources)) or (
          len(sources) not in (0, len(_SOURCE_FIELDS))):
    raise RecordError(f'{path} fails its checksum: it was altered or '
                      f'corrupted after it was written. {fix_hint(path)}')
  info.pop('source_ids_checksum', None)
  _check_dataset_dtypes(path, arrays, sources)
  for split, fields in (('train', ('train_labels', 'train_ids',
                                   'original_train_labels')),
                        ('test', ('test_labels', 'test_ids'))):
    fields += tuple(f for f in (f'{split}_source_ids',) if f in sources)
    shapes = {(arrays.get(f, sources.get(f))).shape for f in fields}
    if len(shapes) != 1 or len(shapes.pop()) != 1:
      raise RecordError(f'{path}: its {split} labels and ids differ in shape. '
                        f'{fix_hint(path)}')
  num_classes = info.get('num_classes')
  if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
      or num_classes < 2):
    raise RecordError(f'{path}: its num_classes is {num_classes!r}, not an '
                      f'integer of at least 2. {fix_hint(path)}')
  for field in ('num_train', 'num_test'):
    length = len(arrays['train_labels' if field == 'num_train'
                        else 'test_labels'])
    if info.get(field) != length or isinstance(info.get(field), bool):
      raise RecordError(f'{path}: its {field} is {info.get(field)!r}, but it '
                        f'holds {length} labels. {fix_hint(path)}')
  for field in ('train_labels', 'test_labels', 'original_train_labels'):
    labels = arrays[field]
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
      raise RecordError(f'{path}: its {field} hold values outside the '
                        f'{num_classes} classes 0..{num_classes - 1}. '
                        f'{fix_hint(path)}')
  arrays.update(sources)
  return arrays, info


# --------------------------------------------------------------------------
# An experiment folder's plan (experiments/base.py writes it)


def mask_digest(mask):
  """A short hash of a bool mask, as an experiment's plan.json keeps it."""
  return packed_digest(np.packbits(np.asarray(mask, bool)))


def packed_digest(packed):
  return hashlib.sha256(packed.tobytes()).hexdigest()[:16]
