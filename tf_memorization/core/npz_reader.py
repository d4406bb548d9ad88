"""The arrays of an untrusted .npz file, read within bounds set beforehand.

An .npz file is a zip of .npy members. np.load decompresses a member whole
before anything about it can be checked, and a 1 MB np.savez_compressed
file can hold a GiB of zeros (a zip bomb: deflate expands up to ~1000x).
Archive reads a payload already held in memory (the caller reads the file
once) in three steps, so that a caller can refuse it before the expensive
one:

  1. The zip directory: each member's compression and the size it declares
     decompressed (declared_bytes sums them), without reading any data.
  2. header(key): the member's .npy header (at most MAX_NPY_HEADER bytes,
     numpy's own limit, are decompressed): its dtype, shape and order, so
     its size (Header.nbytes, Header.describe) is known before its data.
  3. array(key): the data, only once the header's size and the zip
     directory's agree, and decompressed only up to that size (zipfile
     stops at the directory's size and checks its CRC there): a directory
     or header that lies cannot make it more. Data goes straight into the
     array (a few MiB at a time), so reading a member holds its size once.

No pickles: an object array is refused, never unpickled (np.load's
allow_pickle=False). Only stored or deflated members (what np.savez and
np.savez_compressed write) are read. Members other than .npy files are never
read. Every refusal is one `error` (the caller's exception class) naming the
file and the member, and ending in the caller's `hint`.
"""

import dataclasses
import io
import math
import struct
import zipfile
import zlib

import numpy as np

from tf_memorization.core import errors

MAX_NPY_HEADER = 10_000  # bytes; numpy's own limit (np.lib.format)
_CHUNK = 4 << 20  # bytes decompressed at a time into an array
# What a damaged member raises while it is read (reported as one error).
_READ_ERRORS = (OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError, struct.error, zipfile.BadZipFile, zlib.error)


def size_text(nbytes):
  """A byte count as people read it ('1.0 GiB')."""
  value, unit = float(nbytes), 'bytes'
  for larger in ('KiB', 'MiB', 'GiB', 'TiB'):
    if value < 1024:
      break
    value, unit = value / 1024, larger
  return f'{nbytes} bytes' if unit == 'bytes' else f'{value:.1f} {unit}'


@dataclasses.dataclass(frozen=True)
class Header:
  """What a member's .npy header declares; `offset`: where its data starts."""
  shape: tuple
  fortran_order: bool
  dtype: np.dtype
  offset: int

  @property
  def count(self):
    return math.prod(self.shape)

  @property
  def nbytes(self):
    return self.count * self.dtype.itemsize

  def describe(self):
    article = 'an' if str(self.dtype)[0] in 'aeiou' else 'a'
    return (f'{article} {self.dtype} array of shape {self.shape} '
            f'({size_text(self.nbytes)} uncompressed)')


class Archive:
  """The .npy members of an .npz file's bytes, by key (as np.load names
  them): a member's header is read first (a few bytes decompressed), and
  its data only up to the size its header and the zip directory agree on.

  Args:
    path: the file's name, for the messages.
    payload: its bytes.
    error: the exception class of every refusal (e.g. errors.RecordError).
    hint: the sentence that ends every refusal's message (what to do).
    unsupported_hint: the one that ends the refusal of a member of another
      zip method, or encrypted (default: `hint`).

  Raises (from the constructor) zipfile.BadZipFile, OSError, EOFError or
  ValueError when `payload` is no zip file; the caller says what to do.
  """

  def __init__(self, path, payload, error=errors.RecordError, hint='',
               unsupported_hint=None):
    self.path = path
    self._error = error
    self._hint = hint
    self._unsupported_hint = hint if unsupported_hint is None else (
        unsupported_hint)
    self._zip = zipfile.ZipFile(io.BytesIO(payload))
    self._members = {info.filename[:-len('.npy')]: info
                     for info in self._zip.infolist()
                     if info.filename.endswith('.npy')}
    self._headers = {}

  def __contains__(self, key):
    return key in self._members

  def keys(self):
    return list(self._members)

  def declared_bytes(self):
    """The size of all members together once decompressed, as the zip
    directory declares it (nothing is decompressed): array() never
    decompresses more than its member's share."""
    return sum(info.file_size for info in self._members.values())

  def largest(self):
    """The key of the member the zip directory declares largest (None if
    there are none), for a message."""
    return max(self._members, key=lambda k: self._members[k].file_size,
               default=None)

  def _refusal(self, message, hint=None):
    """The caller's error: `message`, then the hint."""
    return self._error(f'{message} {self._hint if hint is None else hint}'
                       .rstrip())

  def _read(self, key, read):
    """read(member file) of the member `key`, its errors one line."""
    info = self._members[key]
    if (info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
        or info.flag_bits & 0x1):
      how = ('encrypted' if info.flag_bits & 0x1 else
             f'compressed by zip method {info.compress_type}')
      raise self._refusal(
          f'{self.path}: {key} is {how}, which neither np.savez nor '
          'np.savez_compressed does: nothing of it is read.',
          self._unsupported_hint)
    try:
      with self._zip.open(info) as member:
        return read(member)
    except _READ_ERRORS as e:
      raise self._refusal(
          f'{self.path}: its {key} cannot be read ({type(e).__name__}: {e}): '
          'the file is damaged or not of np.savez format.') from e

  def header(self, key):
    """The Header of member `key` (at most MAX_NPY_HEADER bytes read)."""
    if key not in self._headers:
      self._headers[key] = self._read(key, read_header)
    return self._headers[key]

  def array(self, key):
    """Member `key` as a (writable) array, decompressed up to its declared
    size; an object array is refused unread."""
    header = self.header(key)
    if header.dtype.hasobject:
      raise self._refusal(
          f'{self.path}: {key} is an object array ({header.dtype}), which '
          'loads only as a pickle (and a pickle can run code; '
          'allow_pickle=False): nothing of it is read.')
    stored = self._members[key].file_size - header.offset
    if stored != header.nbytes:
      raise self._refusal(
          f'{self.path}: {key} declares {header.describe()}, but the zip '
          f'directory gives it {size_text(stored)} of data: the file is '
          f'damaged (nothing of {key} was decompressed).')
    array = np.empty(header.count, header.dtype)

    def read(member):
      member.read(header.offset)
      # Into the array (no second copy of the data); zipfile stops at the
      # directory's size, and checks the CRC there.
      into, filled = array.view(np.uint8) if header.nbytes else None, 0
      while filled < header.nbytes:
        got = member.readinto(into[filled:filled + _CHUNK])
        if not got:
          raise EOFError(f'{filled} of its {header.nbytes} bytes')
        filled += got

    self._read(key, read)
    return array.reshape(header.shape,
                         order='F' if header.fortran_order else 'C')


def read_header(member):
  """The Header at the start of an .npy member file."""
  head = member.read(10)
  if len(head) < 10 or head[:6] != b'\x93NUMPY' or head[6] not in (1, 2, 3):
    raise ValueError('not an .npy array (of format version 1, 2 or 3)')
  if head[6] == 1:
    length = struct.unpack('<H', head[8:10])[0]
  else:
    head += member.read(2)
    length = struct.unpack('<I', head[8:12])[0]
  if length > MAX_NPY_HEADER:
    raise ValueError(f'its .npy header is of {length} bytes, more than the '
                     f'{MAX_NPY_HEADER} numpy reads')
  head += member.read(length)
  fp = io.BytesIO(head)
  version = np.lib.format.read_magic(fp)
  read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
          np.lib.format.read_array_header_2_0)  # 3.0 differs in encoding
  shape, fortran_order, dtype = read(fp, max_header_size=MAX_NPY_HEADER)
  if fp.tell() != len(head) or any(d < 0 for d in shape):
    raise ValueError('a malformed .npy header')
  return Header(tuple(shape), bool(fortran_order), dtype, len(head))
