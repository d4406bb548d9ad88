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
    metadata      a JSON string: trial_index, seed, fingerprint, dataset,
                  metrics, library versions, time, host, and a sha256 of the
                  arrays above (so a truncated or altered record is detected).

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

import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import json
import math
import os
import platform
import re
import socket
import struct
import time
import uuid
import zipfile
import zlib

import numpy as np
import tensorflow as tf

FORMAT_VERSION = 1
TRIALS_DIR = 'trials'
DATASET_FILE = 'dataset.npz'
CONFIG_FILE = 'operative_config.gin'
_RECORD_RE = re.compile(r'^trial_(\d{6,})\.npz$')
_ARRAY_FIELDS = ('mask', 'train_pred', 'train_prob', 'train_margin',
                 'test_pred', 'test_prob', 'test_margin')
_DATASET_FIELDS = ('train_labels', 'test_labels', 'train_ids', 'test_ids',
                   'original_train_labels')


class RecordError(ValueError):
  """A workdir's records are missing, corrupt, or do not belong together."""


class NoSpaceError(OSError):
  """A write failed for lack of space (disk full, quota, file size limit).

  An OSError (errno ENOSPC, EDQUOT or EFBIG), so callers that retry failed
  writes (e.g. lease renewal) still do; the binaries print its message.
  """

  def __init__(self, message, code=errno.ENOSPC):
    super().__init__(message)
    self.errno = code


_NO_SPACE_ERRNOS = {errno.ENOSPC: 'no space left on device',
                    errno.EDQUOT: 'disk quota exceeded',
                    errno.EFBIG: 'file too large for the file size limit'}
# How tf.io.gfile reports them (its errors carry no errno).
_NO_SPACE_MESSAGES = {'No space left on device': errno.ENOSPC,
                      'Disk quota exceeded': errno.EDQUOT,
                      'File too large': errno.EFBIG}


def no_space_errno(error):
  """ENOSPC, EDQUOT or EFBIG when `error` (or its cause) says the storage is
  full; None otherwise."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
      return error.errno
    if isinstance(error, (OSError, tf.errors.OpError)):
      text = str(error)
      for message, code in _NO_SPACE_MESSAGES.items():
        if message in text:
          return code
    error = error.__cause__ or error.__context__
  return None


def no_space_error(path, error):
  """The NoSpaceError of a failed write to `path`, or None."""
  code = no_space_errno(error)
  if code is None:
    return None
  return NoSpaceError(
      f'No space left writing {path} ({_NO_SPACE_ERRNOS[code]}): free space '
      'or use another --workdir, then run the command again; finished trials '
      'and the files written before are kept.', code)


def record_path(workdir, trial_index):
  return os.path.join(workdir, TRIALS_DIR, f'trial_{trial_index:06d}.npz')


def record_exists(workdir, trial_index):
  return tf.io.gfile.exists(record_path(workdir, trial_index))


def fingerprint(config):
  """A short stable hash of a JSON-serialisable config."""
  text = json.dumps(config, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checksum(arrays):
  digest = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    digest.update(f'{name}:{a.dtype.str}:{a.shape};'.encode())
    digest.update(a)  # the array's buffer: the bytes of a.tobytes(), uncopied
  return digest.hexdigest()


def _remove_quietly(path):
  try:
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  except (OSError, tf.errors.OpError):
    pass  # the error being raised says more than this one


@contextlib.contextmanager
def _removed_on_failure(tmp, path):
  """Removes `tmp` if the block fails; a full disk becomes a NoSpaceError."""
  try:
    yield
  except BaseException as e:
    _remove_quietly(tmp)
    full = no_space_error(path, e) if isinstance(e, Exception) else None
    if full is not None:
      raise full from e
    raise


def _write_tmp(path, payload):
  """Writes `payload` to a new temporary file next to `path`; its name.

  On any failure the temporary file is removed; a full disk (or quota, or
  file size limit) becomes a NoSpaceError naming `path`.
  """
  directory = os.path.dirname(path)
  tmp = f'{path}.tmp-{uuid.uuid4().hex}'
  with _removed_on_failure(tmp, path):
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(payload)
  return tmp


def atomic_write(path, payload):
  """Writes bytes to `path` via a unique temporary name and a rename.

  Returns False (and writes nothing) when `path` already exists, e.g. when
  another worker finished the same trial first. Raises NoSpaceError when the
  storage is full; nothing is left at `path` or at a temporary name then.
  """
  tmp = _write_tmp(path, payload)
  with _removed_on_failure(tmp, path):
    try:
      tf.io.gfile.rename(tmp, path, overwrite=False)
    except tf.errors.AlreadyExistsError:
      tf.io.gfile.remove(tmp)
      return False
  return True


def atomic_replace(path, payload):
  """Writes (or replaces) a file atomically: readers see old or new, whole."""
  tmp = _write_tmp(path, payload)
  with _removed_on_failure(tmp, path):
    tf.io.gfile.rename(tmp, path, overwrite=True)


def json_safe(value):
  """NaN and infinities become null, so strict JSON readers accept the file."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if np.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def atomic_write_text(path, text):
  """Writes (or replaces) a text file atomically."""
  atomic_replace(path, text.encode())


def npz_bytes(arrays):
  """An .npz file (no pickles) of a dict of arrays, as bytes."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def _read_bytes(path):
  """The bytes of a file: local paths directly, URLs through tf.io.gfile."""
  if '://' not in path:
    with open(path, 'rb') as f:
      return f.read()
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def fix_hint(path):
  """What to do about a bad file `path` of a workdir, as a sentence."""
  name = os.path.basename(path)
  match = _RECORD_RE.match(name)
  parent = os.path.dirname(os.path.dirname(path))
  if match and os.path.basename(os.path.dirname(path)) == TRIALS_DIR:
    if '/experiments/' in path.replace(os.sep, '/'):  # experiments.py's
      return ('Delete it and run the estimate binary again with the same '
              'flags: it retrains that model and keeps the others.')
    return (f'Delete it and rerun the train binary (python -m '
            f'tf_memorization.train --workdir={parent} with the same flags) '
            f'to retrain trial {int(match.group(1))}; the other trials are '
            'kept.')
  if name == DATASET_FILE:
    return ('Delete it and rerun the train binary with this --workdir: it '
            'writes it again from the data and keeps the trials.')
  return 'Delete it and run the binary that wrote it again.'


def _npz_error(path, e):
  return RecordError(
      f'{path} is truncated or not a valid record ({type(e).__name__}: '
      f'{e}). {fix_hint(path)}')


def _json_field(path, arrays, field):
  """The JSON dict stored as the string array `field` of an .npz."""
  try:
    value = json.loads(str(arrays.pop(field)))
  except KeyError as e:
    raise RecordError(f'{path} lacks its {field!r}: not a file of this '
                      f'format. {fix_hint(path)}') from e
  except ValueError as e:  # json.JSONDecodeError, or a non-string array
    raise RecordError(f'{path} holds an unreadable {field!r} ({e}): it was '
                      f'altered or corrupted. {fix_hint(path)}') from e
  if not isinstance(value, dict):
    raise RecordError(f'{path}: its {field!r} is not a JSON object: it was '
                      f'altered or corrupted. {fix_hint(path)}')
  return value


def load_npz(path, payload=None):
  """The arrays of an .npz file (allow_pickle=False), or a RecordError."""
  try:
    if payload is None:
      payload = _read_bytes(path)
    # Not np.load's guess (a file that is no zip is tried as a pickle).
    zipfile.ZipFile(io.BytesIO(payload)).close()
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
      return {name: npz[name] for name in npz.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise _npz_error(path, e) from e


_LOCAL_HEADER = struct.Struct('<4s22xHH')  # signature, name and extra lengths
_NPY_MAGIC = b'\x93NUMPY'


@functools.lru_cache(maxsize=1024)
def _npy_header(header):
  """(shape, fortran_order, dtype) of an .npy header (every record of a run
  has the same few, so each is parsed once)."""
  fp = io.BytesIO(header)
  version = np.lib.format.read_magic(fp)
  read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
          np.lib.format.read_array_header_2_0)
  shape, fortran_order, dtype = read(fp)
  if fp.read():
    raise ValueError('unexpected bytes after the .npy header')
  return shape, fortran_order, dtype


def _npz_views(payload, unchecked=()):
  """The arrays of an uncompressed .npz as read-only views of `payload`.

  What np.load(allow_pickle=False) returns for np.savez's files, without its
  per-member costs; None for anything else (compressed members, other
  .npy versions, non-.npy members), which np.load then reads. Raises
  ValueError or zipfile.BadZipFile on a malformed file, as np.load does.

  Args:
    payload: the file's bytes.
    unchecked: members whose zip CRC is not checked (the caller verifies
      them another way, e.g. the records' sha256).
  """
  with zipfile.ZipFile(io.BytesIO(payload)) as archive:
    infos = archive.infolist()
  arrays = {}
  for info in infos:
    name = info.filename[:-len('.npy')]
    if (info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or
        not info.filename.endswith('.npy')):
      return None
    signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(
        payload, info.header_offset)
    if signature != b'PK\x03\x04':
      raise zipfile.BadZipFile(f'bad local header for {info.filename}')
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    end = start + info.file_size
    if end > len(payload):
      raise ValueError(f'{info.filename} is truncated')
    member = memoryview(payload)[start:end]
    if name not in unchecked and zlib.crc32(member) != info.CRC:
      raise zipfile.BadZipFile(f'bad CRC-32 for {info.filename}')
    if bytes(member[:6]) != _NPY_MAGIC or len(member) < 12:
      raise ValueError(f'{info.filename} is not an .npy array')
    if member[6] == 1:
      data = 10 + struct.unpack_from('<H', member, 8)[0]
    elif member[6] == 2:
      data = 12 + struct.unpack_from('<I', member, 8)[0]
    else:
      return None
    shape, fortran_order, dtype = _npy_header(bytes(member[:data]))
    if dtype.hasobject:
      raise ValueError('Object arrays cannot be loaded when '
                       'allow_pickle=False')
    count = math.prod(shape)
    if count * dtype.itemsize != len(member) - data:
      raise ValueError(f'{info.filename} holds {len(member) - data} bytes for '
                       f'a {dtype} array of shape {shape}')
    array = (np.frombuffer(member, dtype, count=count, offset=data)
             if count * dtype.itemsize else np.zeros(count, dtype))
    arrays[name] = array.reshape(shape, order='F' if fortran_order else 'C')
  return arrays


def _library_versions():
  import keras  # pylint: disable=g-import-not-at-top
  return {'tensorflow': tf.__version__, 'keras': keras.__version__,
          'numpy': np.__version__, 'python': platform.python_version()}


def _pred_dtype(num_classes):
  return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def write_record(workdir, trial_index, mask, result, metadata):
  """Writes trial `trial_index`'s record atomically; False if one exists.

  Args:
    workdir: the run's workdir.
    trial_index: t.
    mask: bool [n] training subset of the trial.
    result: a training.TrialResult.
    metadata: JSON-serialisable dict; must hold 'fingerprint', 'seed',
      'dataset' (with num_classes). Versions, time and host are added.
  """
  pred_dtype = _pred_dtype(metadata['dataset']['num_classes'])
  arrays = {
      'mask': np.packbits(np.asarray(mask, bool)),
      'train_pred': result.train_pred.astype(pred_dtype),
      'train_prob': result.train_prob.astype(np.float16),
      'train_margin': result.train_margin.astype(np.float16),
      'test_pred': result.test_pred.astype(pred_dtype),
      'test_prob': result.test_prob.astype(np.float16),
      'test_margin': result.test_margin.astype(np.float16),
  }
  metadata = dict(metadata)
  metadata.update({
      'format_version': FORMAT_VERSION,
      'trial_index': int(trial_index),
      'num_train': int(len(mask)),
      'num_test': int(len(result.test_pred)),
      'metrics': result.metrics,
      'versions': _library_versions(),
      'written_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'host': socket.gethostname(),
      'checksum': _checksum(arrays),
  })
  arrays['metadata'] = np.array(json.dumps(metadata, sort_keys=True))
  return atomic_write(record_path(workdir, trial_index), npz_bytes(arrays))


def read_record(path):
  """Reads and verifies one record: (arrays dict, metadata dict).

  The arrays are read-only views of the file's bytes.
  """
  try:
    payload = _read_bytes(path)
    # The sha256 below covers the arrays; only the metadata's CRC is checked.
    arrays = _npz_views(payload, unchecked=_ARRAY_FIELDS)
  except (OSError, ValueError, EOFError, KeyError, struct.error,
          zipfile.BadZipFile) as e:
    raise _npz_error(path, e) from e
  if arrays is None:
    arrays = load_npz(path, payload)
  missing = [f for f in _ARRAY_FIELDS + ('metadata',) if f not in arrays]
  if missing:
    raise RecordError(f'{path} lacks {missing}: not a trial record of this '
                      f'format. {fix_hint(path)}')
  metadata = _json_field(path, arrays, 'metadata')
  if metadata.get('checksum') != _checksum(arrays):
    raise RecordError(f'{path} fails its checksum (the sha256 in its '
                      'metadata): it was altered or corrupted after it was '
                      f'written. {fix_hint(path)}')
  return arrays, metadata


def read_metadata(path):
  """Only the metadata of a record (cheap; no checksum verification)."""
  try:
    with zipfile.ZipFile(io.BytesIO(_read_bytes(path))) as archive:
      with archive.open('metadata.npy') as member:
        arrays = {'metadata': np.lib.format.read_array(member,
                                                       allow_pickle=False)}
  except (OSError, ValueError, EOFError, KeyError, struct.error,
          zipfile.BadZipFile, tf.errors.OpError) as e:
    raise _npz_error(path, e) from e
  return _json_field(path, arrays, 'metadata')


def list_records(workdir):
  """{trial_index: path} of the finished records in `workdir`."""
  directory = os.path.join(workdir, TRIALS_DIR)
  if not tf.io.gfile.isdir(directory):
    return {}
  found = {}
  for name in tf.io.gfile.listdir(directory):
    match = _RECORD_RE.match(name)
    if match:
      found[int(match.group(1))] = os.path.join(directory, name)
  return dict(sorted(found.items()))


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
  info = dict(dataset.describe(), checksum=_checksum(arrays))
  path = os.path.join(workdir, DATASET_FILE)
  if not write:
    return info
  if tf.io.gfile.exists(path):
    existing = _json_field(path, load_npz(path), 'info')
    if existing.get('checksum') != info['checksum']:
      raise RecordError(
          f'{path} describes other data ({existing.get("name")}, '
          f'{existing.get("num_train")} train examples) than this run '
          f'({info["name"]}, {info["num_train"]}). Use a new --workdir.')
    return info
  arrays['info'] = np.array(json.dumps(info, sort_keys=True))
  atomic_write(path, npz_bytes(arrays))
  return info


def read_dataset_file(workdir):
  path = os.path.join(workdir, DATASET_FILE)
  if not tf.io.gfile.exists(path):
    raise RecordError(f'{path} is missing: {workdir} is not a workdir of the '
                      'train binary (run python -m tf_memorization.train '
                      f'--workdir={workdir} first).')
  arrays = load_npz(path)
  info = _json_field(path, arrays, 'info')
  missing = [f for f in _DATASET_FIELDS if f not in arrays]
  if missing:
    raise RecordError(f'{path} lacks {missing}: not a dataset file of this '
                      f'format. {fix_hint(path)}')
  if info.get('checksum') != _checksum(arrays):
    raise RecordError(f'{path} fails its checksum: it was altered or '
                      f'corrupted after it was written. {fix_hint(path)}')
  for split, fields in (('train', ('train_labels', 'train_ids',
                                    'original_train_labels')),
                        ('test', ('test_labels', 'test_ids'))):
    shapes = {arrays[f].shape for f in fields}
    if len(shapes) != 1 or len(shapes.pop()) != 1:
      raise RecordError(f'{path}: its {split} labels and ids differ in shape. '
                        f'{fix_hint(path)}')
  return arrays, info


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

  @property
  def num_trials(self):
    return len(self.trial_indices)


def _check_shapes(path, arrays, meta, n, n_test, workdir):
  """Refuses a record whose arrays do not fit W/dataset.npz's n and n_test."""
  if meta.get('num_train') != n or meta.get('num_test') != n_test:
    raise RecordError(
        f'{path} was written for {meta.get("num_train")} train / '
        f'{meta.get("num_test")} test examples but '
        f'{os.path.join(workdir, DATASET_FILE)} has {n} / {n_test}: the record '
        'belongs to another dataset. Move it to the workdir it came from, or '
        'delete it.')
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
          f'{os.path.join(workdir, DATASET_FILE)} needs shape {shape} '
          f'({n_test if field.startswith("test") else n} examples): the '
          f'record does not match the workdir\'s dataset. {fix_hint(path)}')


def load(workdir, predictions=False, margins=True, trial_indices=None):
  """Loads and validates every trial record of `workdir`.

  Arrays are filled in place, one record at a time, so the peak memory is
  that of the result (k x n bytes per bool array) plus one record.

  Args:
    workdir: the train binary's --workdir.
    predictions: also return the predicted classes.
    margins: also return the logit margins (float16 [k, n] and [k, n_test]).
    trial_indices: load only these trials (default: all found).

  Returns:
    A `Records`.

  Raises:
    RecordError: no records, a corrupt record, records of different configs
      or data, or shapes that do not match the dataset (the message names the
      files and says what to do).
  """
  dataset_arrays, dataset_info = read_dataset_file(workdir)
  train_labels = dataset_arrays['train_labels']
  test_labels = dataset_arrays['test_labels']
  n, n_test = len(train_labels), len(test_labels)
  found = list_records(workdir)
  if trial_indices is not None:
    absent = sorted(set(trial_indices) - set(found))
    if absent:
      raise RecordError(f'{workdir} has no records for trials {absent[:10]}.')
    found = {t: found[t] for t in sorted(trial_indices)}
  if not found:
    raise RecordError(f'{workdir}/{TRIALS_DIR} holds no trial records: run the '
                      'train binary with this --workdir first.')
  k = len(found)
  out = {'masks': np.zeros((k, n), bool),
         'train_correct': np.zeros((k, n), bool),
         'test_correct': np.zeros((k, n_test), bool),
         'train_prob': np.zeros((k, n), np.float16),
         'test_prob': np.zeros((k, n_test), np.float16)}
  if margins:
    out['train_margin'] = np.zeros((k, n), np.float16)
    out['test_margin'] = np.zeros((k, n_test), np.float16)
  if predictions:
    num_classes = int(dataset_info.get('num_classes') or 2**15)
    out['train_pred'] = np.zeros((k, n), _pred_dtype(num_classes))
    out['test_pred'] = np.zeros((k, n_test), _pred_dtype(num_classes))
  metadata, paths, by_fingerprint = [], [], {}
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

  for row, (t, path) in enumerate(found.items()):
    arrays, meta = read_record(path)
    by_fingerprint.setdefault(meta.get('fingerprint'), []).append(path)
    if meta.get('trial_index') != t:
      raise RecordError(f'{path} holds trial {meta.get("trial_index")}, not '
                        f'{t}: it was renamed. Move it back or delete it.')
    _check_shapes(path, arrays, meta, n, n_test, workdir)
    out['masks'][row] = np.unpackbits(arrays['mask'], count=n).view(bool)
    out['train_correct'][row] = is_label(arrays['train_pred'], train_labels,
                                         'train')
    out['test_correct'][row] = is_label(arrays['test_pred'], test_labels,
                                        'test')
    for field in ('train_prob', 'test_prob', 'train_margin', 'test_margin',
                  'train_pred', 'test_pred'):
      if field in out:
        out[field][row] = arrays[field]
    metadata.append(meta)
    paths.append(path)
  if len(by_fingerprint) > 1:
    groups = '; '.join(f'fingerprint {fp}: {len(p)} records, e.g. {p[0]}'
                       for fp, p in by_fingerprint.items())
    raise RecordError(
        f'{workdir} mixes records of {len(by_fingerprint)} different training '
        f'configs or datasets ({groups}). Move each config\'s records to its '
        'own workdir.')
  return Records(
      train_labels=train_labels, test_labels=test_labels,
      original_train_labels=dataset_arrays['original_train_labels'],
      train_ids=dataset_arrays['train_ids'], test_ids=dataset_arrays['test_ids'],
      trial_indices=np.array(list(found), np.int64), metadata=metadata,
      dataset_info=dataset_info, fingerprint=next(iter(by_fingerprint)),
      paths=paths, train_margin=out.pop('train_margin', None),
      test_margin=out.pop('test_margin', None), **out)
