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

import collections
import concurrent.futures
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
import stat
import struct
import time
import uuid
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from tf_memorization import masks as masks_lib

FORMAT_VERSION = 2
TRIALS_DIR = 'trials'
DATASET_FILE = 'dataset.npz'
CONFIG_FILE = 'operative_config.gin'
RUN_FILE = 'run.json'
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
  another worker finished the same trial first; of several processes
  writing the same local path at once, exactly one gets True. Raises
  NoSpaceError when the storage is full; nothing is left at `path` or at a
  temporary name then.
  """
  tmp = _write_tmp(path, payload)
  with _removed_on_failure(tmp, path):
    if '://' not in path:
      # gfile's no-overwrite rename checks, then renames: two writers can
      # both pass the check and the second replaces the first. A hard link
      # is created exclusively (also on NFS), so exactly one writer wins.
      try:
        os.link(tmp, path)
      except FileExistsError:
        os.remove(tmp)
        return False
      except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
          raise
      else:
        os.remove(tmp)
        return True
    try:
      tf.io.gfile.rename(tmp, path, overwrite=False)
    except tf.errors.AlreadyExistsError:
      tf.io.gfile.remove(tmp)
      return False
  return True


# A file system without hard links (some FUSE and SMB mounts) says so with
# one of these; atomic_write then falls back to gfile's rename.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                  errno.EMLINK, errno.ENOSYS}


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


def _open_regular(path):
  """A local file opened for reading, refused unless it is a regular file.

  A FIFO, a device, a directory or a link to one is refused with a
  RecordError before anything is read: reading a FIFO from a workdir would
  block forever. The check is made on the opened descriptor (O_NONBLOCK:
  opening a FIFO does not wait for a writer), so the file cannot be swapped
  between the check and the read.
  """
  fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
  mode = os.fstat(fd).st_mode
  if not stat.S_ISREG(mode):
    os.close(fd)
    kind = ('a FIFO' if stat.S_ISFIFO(mode) else
            'a directory' if stat.S_ISDIR(mode) else 'a device or socket')
    raise RecordError(f'{path} is {kind}, not a regular file: nothing is read '
                      f'from it. Remove it. {fix_hint(path)}')
  return os.fdopen(fd, 'rb')


def read_bytes(path):
  """The bytes of a file: local paths directly (regular files only, see
  _open_regular), URLs through tf.io.gfile."""
  if '://' not in path:
    with _open_regular(path) as f:
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
      payload = read_bytes(path)
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


# Written margins are clipped to float16's range, so that only a diverged
# model (NaN) leaves a non-finite value in a record.
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _record_checksum(arrays, metadata):
  """sha256 of a record's arrays and of every metadata field but itself.

  The metadata is hashed as canonical JSON (sorted keys, no spaces), which a
  JSON round trip reproduces exactly, so what the estimator relies on (trial
  index, seed, fingerprint, dataset, design, diverged flag) cannot be edited
  without failing the check.
  """
  fields = {key: value for key, value in metadata.items() if key != 'checksum'}
  digest = hashlib.sha256(_checksum(arrays).encode())
  digest.update(json.dumps(fields, sort_keys=True,
                           separators=(',', ':')).encode())
  return digest.hexdigest()


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
  pred_dtype = _pred_dtype(num_classes)

  def margin(values):
    return np.clip(values, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)

  arrays = {
      'mask': np.packbits(np.asarray(mask, bool)),
      'train_pred': result.train_pred.astype(pred_dtype),
      'train_prob': result.train_prob.astype(np.float16),
      'train_margin': margin(result.train_margin),
      'test_pred': result.test_pred.astype(pred_dtype),
      'test_prob': result.test_prob.astype(np.float16),
      'test_margin': margin(result.test_margin),
  }
  metadata = dict(metadata)
  metadata.update({
      'format_version': FORMAT_VERSION,
      'trial_index': int(trial_index),
      'num_train': int(len(mask)),
      'num_test': int(len(result.test_pred)),
      'metrics': result.metrics,
      'diverged': diverged_reason(arrays, result.metrics, num_classes),
      'versions': _library_versions(),
      'written_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'host': socket.gethostname(),
  })
  metadata['checksum'] = _record_checksum(arrays, metadata)
  arrays['metadata'] = np.array(json.dumps(metadata, sort_keys=True))
  if not atomic_write(record_path(workdir, trial_index), npz_bytes(arrays)):
    return False
  return metadata


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
  return arrays, _json_field(path, arrays, 'metadata')


def read_record(path, allow_format_1=False):
  """Reads and verifies one record: (arrays dict, metadata dict).

  The checksum covers the arrays and the metadata (format 2). Records of
  format 1, whose checksum covers only the arrays, are refused unless
  `allow_format_1` (the upgrade path). The arrays are read-only views of
  the file's bytes.
  """
  arrays, metadata = _parse_record(path, read_bytes(path))
  version = metadata.get('format_version')
  if version == 1 and allow_format_1:
    expected = _checksum(arrays)
  elif version == FORMAT_VERSION:
    expected = _record_checksum(arrays, metadata)
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
    raise RecordError(f'{path} fails its checksum (the sha256 in its '
                      'metadata, over its arrays and metadata): it was '
                      'altered or corrupted after it was written. '
                      f'{fix_hint(path)}')
  return arrays, metadata


def read_metadata(path):
  """Only the metadata of a record (cheap: reads the zip's metadata member
  alone; no checksum verification)."""
  try:
    source = (io.BytesIO(read_bytes(path)) if '://' in path else
              _open_regular(path))
    with source, zipfile.ZipFile(source) as archive:
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


# --------------------------------------------------------------------------
# The workdir's config: fixed by the first process, atomically


def run_file_path(workdir):
  return os.path.join(workdir, RUN_FILE)


def read_run_file(workdir):
  """W/run.json as a dict ({'fingerprint': ..., ...}), or None if absent."""
  path = run_file_path(workdir)
  if not tf.io.gfile.exists(path):
    return None
  try:
    value = json.loads(read_bytes(path).decode())
  except (ValueError, UnicodeDecodeError) as e:
    value = None
    reason = str(e)
  else:
    reason = 'no fingerprint'
  if not isinstance(value, dict) or not isinstance(value.get('fingerprint'),
                                                   str):
    raise RecordError(
        f'{path} is not a run file of this format ({reason}): it was altered '
        'or corrupted. If every record in the workdir is of the same config, '
        'delete it; the train binary writes it again from the records.')
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
  atomic_write(run_file_path(workdir), payload.encode())
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
  num_classes = info.get('num_classes')
  if not isinstance(num_classes, int) or num_classes < 1:
    raise RecordError(f'{path}: its num_classes is {num_classes!r}, not a '
                      f'positive integer. {fix_hint(path)}')
  for field in ('train_labels', 'test_labels', 'original_train_labels'):
    labels = arrays[field]
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
      raise RecordError(f'{path}: its {field} hold values outside the '
                        f'{num_classes} classes 0..{num_classes - 1}. '
                        f'{fix_hint(path)}')
  return arrays, info


# --------------------------------------------------------------------------
# Loading a directory of records, every value checked


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


# The fields of the dataset description that identify the data.
_DATASET_IDENTITY = ('name', 'version', 'num_classes', 'num_train',
                     'num_test', 'checksum')


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


def _check_values(path, arrays, num_classes):
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
          f'predicts them. {fix_hint(path)}')
  for field in ('train_prob', 'test_prob'):
    values = arrays[field]
    if len(values) and not _in_unit_interval(values):
      raise RecordError(
          f'{path}: {field} holds values outside [0, 1] or NaN (min '
          f'{values.min()}, max {values.max()}), and the record is not '
          f'flagged as diverged. {fix_hint(path)}')
  for field in ('train_margin', 'test_margin'):
    values = arrays[field]
    if len(values) and not _finite(values):
      raise RecordError(
          f'{path}: {field} holds NaN or infinite values, and the record is '
          f'not flagged as diverged. {fix_hint(path)}')


class _DesignJobs:
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
    fields = meta.get('design')
    if fields is None and 'design' in meta:
      # A model an experiment planned: checked against its folder's plan.
      if not tf.io.gfile.exists(os.path.join(self._directory, PLAN_FILE)):
        raise RecordError(
            f'{path} holds a model of an experiment (its mask was planned, '
            f'not drawn from a subset design), but {self._directory} has no '
            f'{PLAN_FILE}: it is not a trial of this run. Move it back to '
            f'its experiment folder. {fix_hint(path)}')
      if self._plan is None:
        self._plan = _plan_jobs(self._directory, 'plan')
      return self._plan(path, meta)
    if not isinstance(fields, dict):
      raise RecordError(f'{path} names no subset design. {fix_hint(path)}')
    key = json.dumps(fields, sort_keys=True)
    if key not in self._designs:
      try:
        self._designs[key] = masks_lib.SubsetDesign(
            num_trials=int(fields.get('num_trials', 2)),
            subset_ratio=float(fields['subset_ratio']),
            design=fields['design'], seed=int(fields['seed']))
      except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f'{path} names an unusable subset design '
                          f'{fields!r} ({e}). {fix_hint(path)}') from e
    design = self._designs[key]
    t = meta['trial_index']
    try:
      return design.mask(self._n, t), design.trial_seed(t)
    except ValueError as e:  # a balanced design's trial index out of range
      raise RecordError(f'{path}: trial {t} is not a trial of its design '
                        f'{fields!r} ({e}). {fix_hint(path)}') from e


PLAN_FILE = 'plan.json'


def mask_digest(mask):
  """A short hash of a bool mask, as an experiment's plan.json keeps it."""
  return _packed_digest(np.packbits(np.asarray(mask, bool)))


def _packed_digest(packed):
  return hashlib.sha256(packed.tobytes()).hexdigest()[:16]


def _planned(directory):
  """{index: (mask digest, seed)} of the folder's plan.json."""
  path = os.path.join(directory, PLAN_FILE)
  try:
    plan = json.loads(read_bytes(path).decode())
    return {int(job['index']): (str(job['mask']), int(job['seed']))
            for job in plan['jobs']}
  except (OSError, tf.errors.OpError, ValueError, UnicodeDecodeError,
          KeyError, TypeError) as e:
    raise RecordError(
        f'{path} is missing or unreadable ({type(e).__name__}: {e}): the '
        f'models in {directory} cannot be checked against their plan. Run '
        'the estimate binary again with the same flags (it rewrites the '
        'plan), or delete the folder to redo the experiment.') from e


def _plan_jobs(directory, jobs):
  """The job lookup of an experiment's folder: (mask or its digest, seed)."""
  if jobs == 'plan':
    by_index = _planned(directory)
  else:
    by_index = {int(job.index): (np.asarray(job.mask, bool), int(job.seed))
                for job in jobs}

  def lookup(path, meta):
    job = by_index.get(meta['trial_index'])
    if job is None:
      raise RecordError(
          f'{path} holds model {meta["trial_index"]}, which its folder\'s '
          'plan does not hold: it belongs to another experiment. '
          f'{fix_hint(path)}')
    return job

  return lookup


DIVERGED_POLICIES = ('refuse', 'skip', 'keep')


class _Checker:
  """Checks every record of one directory against what it must be."""

  def __init__(self, directory, dataset_info, n, n_test, jobs, fingerprint):
    self.directory = directory
    self.info = dataset_info
    self.n, self.n_test = n, n_test
    self.num_classes = int(dataset_info['num_classes'])
    self.jobs = (_DesignJobs(directory, n) if jobs is None else
                 _plan_jobs(directory, jobs))
    self.fingerprint = fingerprint

  def __call__(self, t, path):
    """(arrays, metadata) of record t, or a RecordError saying what is wrong."""
    arrays, meta = read_record(path)
    if meta.get('trial_index') != t:
      raise RecordError(f'{path} holds trial {meta.get("trial_index")}, not '
                        f'{t}: it was renamed. Move it back or delete it.')
    _check_shapes(path, arrays, meta, self.n, self.n_test, self.directory)
    dataset = meta.get('dataset')
    if not isinstance(dataset, dict) or any(
        dataset.get(k) != self.info.get(k) for k in _DATASET_IDENTITY):
      raise RecordError(
          f'{path} was trained on other data than '
          f'{os.path.join(self.directory, DATASET_FILE)} describes (its '
          'name, version, sizes or labels differ): it belongs to another '
          'workdir. Move it there, or delete it.')
    if self.fingerprint is not None and meta.get('fingerprint') != (
        self.fingerprint[0]):
      raise RecordError(
          f'{path} was trained with another config (fingerprint '
          f'{meta.get("fingerprint")}) than the one {self.fingerprint[1]} '
          f'({self.fingerprint[0]}): it does not belong here (a mix of '
          'different training configs). Move it to its own workdir, or '
          'delete it.')
    mask, seed = self.jobs(path, meta)
    if isinstance(mask, str):  # a plan.json digest
      same_mask = mask == _packed_digest(arrays['mask'])
    else:
      same_mask = np.array_equal(arrays['mask'], np.packbits(mask))
    if meta.get('seed') != seed or not same_mask:
      raise RecordError(
          f'{path}: its mask or seed is not the one trial {t} of its '
          'design (or plan) has: it was trained on another subset, or '
          f'copied from another trial. {fix_hint(path)}')
    if meta.get('diverged') is None:
      _check_values(path, arrays, self.num_classes)
    return arrays, meta


def _checked_records(found, checker, workers=None):
  """(t, path, arrays, metadata) for each record of `found`, in order.

  With workers > 1, records are read and checked by that many threads
  (reading, sha256 and the mask draws release the GIL), with at most
  2 x workers records in flight, so memory holds only those beyond the
  caller's arrays. The default is one: on the 2-core development machine two
  threads were slower than one (benchmarks/load_benchmark.py).
  """
  items = list(found.items())
  workers = workers or 1
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
  fixed = read_run_file(directory)
  if fixed is None:
    return None
  return fixed['fingerprint'], f'{run_file_path(directory)} fixes'


def check(directory, trial_indices=None, jobs=None, fingerprint=None,
          dataset_info=None):
  """Verifies records of `directory` as `load` would, keeping nothing.

  Args:
    directory: a workdir or an experiment's folder.
    trial_indices: check only these trials' records (those that exist).
    jobs, fingerprint: as for `load`.
    dataset_info: the data the records must be of (write_dataset_file's
      info); default: W/dataset.npz's.

  Returns:
    {trial index: metadata} of the verified records (diverged included).
  """
  found = list_records(directory)
  if trial_indices is not None:
    wanted = set(int(t) for t in trial_indices)
    found = {t: p for t, p in found.items() if t in wanted}
  if not found:
    return {}
  if dataset_info is None:
    dataset_info = read_dataset_file(directory)[1]
  checker = _Checker(directory, dataset_info, dataset_info['num_train'],
                     dataset_info['num_test'], jobs,
                     _expected_fingerprint(directory, fingerprint))
  by_fingerprint, verified = {}, {}
  for t, path, _, meta in _checked_records(found, checker):
    by_fingerprint.setdefault(meta.get('fingerprint'), []).append(path)
    verified[t] = meta
  _refuse_mixed(directory, by_fingerprint)
  return verified


def upgrade_format_1(directory, log=print):
  """Re-signs the format-1 records of `directory` as format 2, after checks.

  Format 1's checksum covered only the arrays. Each such record is read
  with that checksum verified, its margins clipped as the writer now clips
  them, its diverged flag computed, and its metadata signed with the format-2
  checksum; it replaces the file only if it then passes every check `load`
  makes (dataset, fingerprint, mask and seed against its design or its
  folder's plan.json, values). The records must agree on one fingerprint
  (W/run.json's, when present). What the checks cannot know is whether the
  metadata was edited before: run this only on workdirs you trust.

  Returns:
    The trial indices upgraded.
  """
  found = list_records(directory)
  old, fingerprints = {}, set()
  for t, path in found.items():
    meta = read_metadata(path)
    fingerprints.add(meta.get('fingerprint'))
    if meta.get('format_version') == 1:
      old[t] = path
  if not old:
    return []
  fixed = read_run_file(directory)
  if fixed is None and len(fingerprints) > 1:
    raise RecordError(f'{directory} holds records of {len(fingerprints)} '
                      'configs: move each config\'s records to its own '
                      'workdir before upgrading them.')
  planned = tf.io.gfile.exists(os.path.join(directory, PLAN_FILE))
  dataset_info = read_dataset_file(directory)[1]
  upgraded = []
  for t, path in old.items():
    original = read_bytes(path)
    arrays, meta = read_record(path, allow_format_1=True)
    arrays = {name: np.array(a) for name, a in arrays.items()}
    for field in ('train_margin', 'test_margin'):
      arrays[field] = np.clip(arrays[field], -_FLOAT16_MAX, _FLOAT16_MAX)
    meta.update({
        'format_version': FORMAT_VERSION, 'upgraded_from_format': 1,
        'design': None if planned else meta.get('design'),
        'diverged': diverged_reason(arrays, meta.get('metrics') or {},
                                    int(dataset_info['num_classes']))})
    meta['checksum'] = _record_checksum(arrays, meta)
    arrays['metadata'] = np.array(json.dumps(meta, sort_keys=True))
    atomic_replace(path, npz_bytes(arrays))
    try:
      check(directory, trial_indices=[t],
            fingerprint=None if fixed else next(iter(fingerprints)))
    except RecordError:
      atomic_replace(path, original)
      raise
    upgraded.append(t)
    log(f'{path}: upgraded from record format 1 to {FORMAT_VERSION}.')
  return upgraded


def _refuse_mixed(directory, by_fingerprint):
  if len(by_fingerprint) > 1:
    groups = '; '.join(f'fingerprint {fp}: {len(p)} records, e.g. {p[0]}'
                       for fp, p in by_fingerprint.items())
    raise RecordError(
        f'{directory} mixes records of {len(by_fingerprint)} different '
        f'training configs or datasets ({groups}). Move each config\'s '
        'records to its own workdir.')


def load(workdir, predictions=False, margins=True, trial_indices=None,
         jobs=None, fingerprint=None, diverged='refuse', threads=None):
  """Loads and validates every trial record of `workdir`.

  Every record is checked before any of its values is used: the zip
  structure, its sha256 (arrays and metadata), its trial index, shapes and
  dataset against W/dataset.npz, its fingerprint against the folder's fixed
  config (W/run.json, or `fingerprint`), its mask and seed against its
  subset design (or the experiment's plan, `jobs`), and its values
  (classes within the dataset's, probabilities in [0, 1], finite margins)
  unless it is flagged as diverged. Arrays are filled in place, a few
  records at a time, so the peak memory is that of the result plus a few
  records.

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
    threads: records read and checked at once (default 1; more may help
      on machines with many cores).

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
    num_classes = int(dataset_info['num_classes'])
    out['train_pred'] = np.zeros((k, n), _pred_dtype(num_classes))
    out['test_pred'] = np.zeros((k, n_test), _pred_dtype(num_classes))
  metadata, paths, kept, by_fingerprint = [], [], [], {}
  diverged_trials = {}
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
                     _expected_fingerprint(workdir, fingerprint))
  row = 0
  for t, path, arrays, meta in _checked_records(found, checker, threads):
    by_fingerprint.setdefault(meta.get('fingerprint'), []).append(path)
    if meta.get('diverged') is not None:
      diverged_trials[t] = meta['diverged']
      if diverged != 'keep':
        continue
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
  trimmed = {name: array[:row] for name, array in out.items()}
  return Records(
      train_labels=train_labels, test_labels=test_labels,
      original_train_labels=dataset_arrays['original_train_labels'],
      train_ids=dataset_arrays['train_ids'], test_ids=dataset_arrays['test_ids'],
      trial_indices=np.array(kept, np.int64), metadata=metadata,
      dataset_info=dataset_info, fingerprint=next(iter(by_fingerprint)),
      paths=paths, train_margin=trimmed.pop('train_margin', None),
      test_margin=trimmed.pop('test_margin', None), diverged=diverged_trials,
      **trimmed)
