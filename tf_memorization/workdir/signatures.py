"""The signatures of a workdir's files: what makes an altered record fail.

    arrays_digest(arrays)         one sha256 over named arrays (W/dataset.npz,
                                  records of formats 1-3)
    record_checksum(arrays, m)    formats 2 and 3: over the arrays and the
                                  metadata
    member_digest(name, array)    format 4: one array alone
    metadata_checksum(m)          format 4: over the metadata, which holds
                                  every array's member_digest
    sign(arrays, m)               the metadata signed as its format signs

Format 4 signs each array on its own so that a reader can verify, and so
read, only the arrays it uses (records.read_record's `members`).
"""

import hashlib
import json

import numpy as np

# Formats whose arrays are signed one by one (member_digests).
MEMBER_SIGNED_VERSIONS = (4,)


def _update(digest, name, array):
  array = np.ascontiguousarray(array)
  digest.update(f'{name}:{array.dtype.str}:{array.shape};'.encode())
  digest.update(array)  # the array's buffer: its bytes, uncopied


def _canonical(metadata):
  """Every metadata field but the checksum as canonical JSON (sorted keys,
  no spaces), which a JSON round trip reproduces exactly."""
  fields = {key: value for key, value in metadata.items() if key != 'checksum'}
  return json.dumps(fields, sort_keys=True, separators=(',', ':')).encode()


def arrays_digest(arrays):
  """sha256 (hex) of named arrays: each one's name, dtype, shape and bytes,
  in name order (formats 1-3 of the records, W/dataset.npz)."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    _update(digest, name, arrays[name])
  return digest.hexdigest()


def member_digest(name, array):
  """sha256 of one array of a record, with its name, dtype and shape."""
  digest = hashlib.sha256()
  _update(digest, name, array)
  return digest.hexdigest()


def metadata_checksum(metadata):
  """sha256 of every metadata field but the checksum (format 4: the fields
  hold each array's member_digest, so this signs the arrays too)."""
  return hashlib.sha256(_canonical(metadata)).hexdigest()


def sign(arrays, metadata):
  """`metadata` signed for `arrays` as its format_version signs: format 4,
  each array's member_digest and the metadata_checksum over them; formats
  2 and 3, record_checksum over arrays and metadata. A new dict."""
  metadata = {key: value for key, value in metadata.items()
              if key not in ('checksum', 'member_digests')}
  if metadata.get('format_version') in MEMBER_SIGNED_VERSIONS:
    metadata['member_digests'] = {name: member_digest(name, value)
                                  for name, value in arrays.items()}
    metadata['checksum'] = metadata_checksum(metadata)
  else:
    metadata['checksum'] = record_checksum(arrays, metadata)
  return metadata


def record_checksum(arrays, metadata):
  """sha256 of a record's arrays and of every metadata field but itself
  (as canonical JSON), so what the estimator relies on (trial index, seed,
  fingerprint, dataset, design, diverged flag) cannot be edited without
  failing the check."""
  digest = hashlib.sha256(arrays_digest(arrays).encode())
  digest.update(_canonical(metadata))
  return digest.hexdigest()
