"""npz_reader, through what reads a workdir's .npz files (storage.load_npz).

A trial record or dataset.npz of a workdir is untrusted input: one that
np.savez_compressed could have written, holding a GiB of zeros in ~1 MB (a
zip bomb), is refused naming the file before anything of it is
decompressed; a legitimate compressed file loads as np.load loads it; an
object array is refused and never unpickled.
"""

import io
import os
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import npz_reader
from tf_memorization.core import storage
from tf_memorization.workdir import records

_LOCAL = struct.Struct('<4s5H3L2H')
_CENTRAL = struct.Struct('<4s6H3L5H2L')
_END = struct.Struct('<4s4H2LH')
_MIB = 1 << 20


def _npz_bytes(members):
  """A deflated .npz (as np.savez_compressed writes one) of (name, raw
  deflate stream, crc32, decompressed size) members."""
  out, central = bytearray(), bytearray()
  for name, stream, crc, size in members:
    name = f'{name}.npy'.encode()
    fields = (20, 0, 8, 0, 0x21, crc, len(stream), size, len(name))
    central += _CENTRAL.pack(b'PK\x01\x02', 20, *fields, 0, 0, 0, 0, 0,
                             len(out)) + name
    out += _LOCAL.pack(b'PK\x03\x04', *fields, 0) + name + stream
  return bytes(out + central + _END.pack(
      b'PK\x05\x06', 0, 0, len(members), len(members), len(central),
      len(out), 0))


def _member(name, array):
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, np.asarray(array))
  data = buffer.getvalue()
  packer = zlib.compressobj(9, zlib.DEFLATED, -15)
  return (name, packer.compress(data) + packer.flush(), zlib.crc32(data),
          len(data))


def _zeros_member(name, mebibytes):
  """np.zeros of `mebibytes` MiB of float64, deflated in ~1 KB per MiB:
  one MiB of zeros compressed after a full flush (which resets the
  compressor), repeated."""
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {
      'descr': '<f8', 'fortran_order': False,
      'shape': (mebibytes * _MIB // 8,)})
  header = header.getvalue()
  block = bytes(_MIB)
  packer = zlib.compressobj(9, zlib.DEFLATED, -15)
  start = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
  repeated = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
  crc = zlib.crc32(header)
  for _ in range(mebibytes):
    crc = zlib.crc32(block, crc)
  return (name, start + repeated * mebibytes + packer.flush(), crc,
          len(header) + mebibytes * _MIB)


@pytest.fixture(scope='module')
def zip_bomb():
  """The bytes of a dataset.npz whose train_labels hold a GiB of zeros."""
  return _npz_bytes([_member('test_labels', np.arange(5)),
                     _zeros_member('train_labels', 1024)])


def _peak_bytes(call):
  """(call()'s error, the most memory Python and numpy held during it)."""
  tracemalloc.start()
  try:
    tracemalloc.reset_peak()
    with pytest.raises(errors.RecordError) as caught:
      call()
    return str(caught.value), tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_the_zip_bomb_construction_is_what_np_load_reads(tmp_path):
  path = tmp_path / 'small.npz'
  path.write_bytes(_npz_bytes([_member('labels', np.arange(3)),
                               _zeros_member('zeros', 4)]))
  with np.load(path, allow_pickle=False) as npz:
    np.testing.assert_array_equal(npz['labels'], np.arange(3))
    assert npz['zeros'].shape == (4 * _MIB // 8,) and not npz['zeros'].any()
  loaded = storage.load_npz(str(path))
  np.testing.assert_array_equal(loaded['labels'], np.arange(3))
  np.testing.assert_array_equal(loaded['zeros'], np.zeros(4 * _MIB // 8))
  assert path.stat().st_size < 10_000


def test_a_zip_bomb_in_a_workdir_is_refused_before_it_is_decompressed(
    tmp_path, zip_bomb):
  assert len(zip_bomb) < 2 * _MIB  # its train_labels: 1 GiB
  workdir = tmp_path / 'workdir'
  (workdir / files.TRIALS_DIR).mkdir(parents=True)
  dataset = workdir / files.DATASET_FILE
  record = workdir / files.TRIALS_DIR / 'trial_000000.npz'
  for path in (dataset, record):
    path.write_bytes(zip_bomb)
  for path, read, hint in (
      (dataset, lambda: storage.load_npz(str(dataset), hint='Fix it.'),
       'Fix it.'),
      (dataset, lambda: records.read_dataset_file(str(workdir)),
       records.fix_hint(str(dataset))),
      (record, lambda: records.read_record(str(record)),
       records.fix_hint(str(record)))):
    message, peak = _peak_bytes(read)
    assert str(path) in message and '1.0 GiB' in message, message
    assert 'train_labels' in message and '(134217728,)' in message
    assert message.endswith(hint), message
    assert peak < 32 * _MIB, peak  # the file is ~1 MB, its member 1 GiB


def test_a_member_larger_than_its_directory_entry_is_refused_unread(
    tmp_path):
  """A header declaring a GiB on a few bytes of data: refused before its
  array is allocated."""
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {
      'descr': '<f8', 'fortran_order': False, 'shape': (1 << 27,)})
  data = header.getvalue() + bytes(80)
  packer = zlib.compressobj(9, zlib.DEFLATED, -15)
  path = tmp_path / 'liar.npz'
  path.write_bytes(_npz_bytes([('tr_mem', packer.compress(data) +
                                packer.flush(), zlib.crc32(data),
                                len(data))]))
  message, peak = _peak_bytes(lambda: storage.load_npz(str(path)))
  assert str(path) in message and 'tr_mem declares' in message
  assert '1.0 GiB' in message and '80 bytes of data' in message
  assert peak < 32 * _MIB, peak


def test_the_bound_is_a_keyword_of_load_npz(tmp_path):
  path = tmp_path / 'record.npz'
  path.write_bytes(_npz_bytes([_zeros_member('zeros', 2)]))
  assert storage.load_npz(str(path))['zeros'].shape == (2 * _MIB // 8,)
  with pytest.raises(errors.RecordError, match='2.0 MiB of arrays'):
    storage.load_npz(str(path), max_bytes=_MIB)


def _arrays():
  """What a record or dataset file holds, and what np.load must keep:
  byte order, Fortran order, strings, scalars, empty arrays."""
  rng = np.random.default_rng(0)
  return {
      'test_prob': rng.random((50, 10)).astype(np.float16),
      'mask': rng.random(300) < 0.5,
      'train_labels': rng.integers(0, 10, 300),
      'big_endian': np.asfortranarray(rng.random((7, 9)).astype('>f4')),
      'ids': np.array([f'example_{i}' for i in range(20)]),
      'names': np.array([b'a', b'bcd']),
      'metadata': np.array('{"trial_index": 3}'),
      'empty': np.zeros((0, 4), np.int32),
      'image': rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
  }


@pytest.mark.parametrize('save', [np.savez_compressed, np.savez])
def test_a_file_loads_as_np_load_loads_it(tmp_path, save):
  path = str(tmp_path / 'record.npz')
  save(path, **_arrays())
  loaded = storage.load_npz(path)
  with np.load(path, allow_pickle=False) as npz:
    assert sorted(loaded) == sorted(npz.files)
    for key in npz.files:
      expected, got = npz[key], loaded[key]
      assert (got.dtype, got.shape) == (expected.dtype, expected.shape), key
      assert got.flags.f_contiguous == expected.flags.f_contiguous, key
      assert got.flags.writeable, key
      np.testing.assert_array_equal(got, expected)


class _Sentinel:
  """Unpickling it creates a folder: the proof that a pickle ran."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return os.mkdir, (self.path,)


@pytest.mark.parametrize('save', [np.savez_compressed, np.savez])
def test_an_object_array_is_refused_never_unpickled(tmp_path, save):
  sentinel = str(tmp_path / 'pickle_ran')
  path = str(tmp_path / 'record.npz')
  save(path, labels=np.arange(3),
       ids=np.array([_Sentinel(sentinel), 'x'], dtype=object))
  with pytest.raises(errors.RecordError) as caught:
    storage.load_npz(path)
  message = str(caught.value)
  assert path in message and 'ids is an object array' in message
  assert 'pickle' in message and message.endswith(storage.RERUN_HINT)
  assert not os.path.exists(sentinel)


def test_a_member_of_another_zip_method_is_refused(tmp_path):
  path = str(tmp_path / 'bzip2.npz')
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_BZIP2) as archive:
    with archive.open('labels.npy', 'w') as member:
      np.lib.format.write_array(member, np.arange(3))
  with pytest.raises(errors.RecordError, match='compressed by zip method 12'):
    storage.load_npz(path)


def test_sizes_read_as_people_read_them():
  assert npz_reader.size_text(80) == '80 bytes'
  assert npz_reader.size_text(1 << 30) == '1.0 GiB'
  assert npz_reader.size_text(3 * _MIB // 2) == '1.5 MiB'
