"""Files written whole or not at all, and read as untrusted input.

The bottom layer every module that writes or reads a workdir file uses
(records, checkpoints, claims, plans, estimates, the report):

  * atomic_write / atomic_replace / atomic_write_text: a unique temporary
    name next to the target, then a rename (atomic_write: an exclusive
    create; of several processes writing the same local path, exactly one
    wins). A killed writer leaves at most a `*.tmp-*` file.
  * A write that fails for lack of space (ENOSPC, EDQUOT, or EFBIG under a
    file size limit) removes its temporary file and raises
    errors.NoSpaceError, which the binaries print as one line; files written
    before are kept.
  * read_bytes refuses anything but a regular file (a FIFO planted in a
    workdir would block a reader forever); load_npz reads .npz files with
    allow_pickle=False (nothing in a workdir is ever executed), bounded
    (npz_reader: a zip bomb is refused before it is decompressed), and
    npz_views reads np.savez's files as views of their bytes, fast.
  * check_writable finds an unwritable or full output folder before any
    work starts; staged_output writes a whole folder (W/estimates, a
    report) beside its final place and swaps it in only when complete.
  * Paths are local or any tf.io.gfile URL (e.g. gs://).

Everything read badly is an errors.RecordError naming the file and what to
do (`hint`, by default: delete it and run the binary that wrote it again).
"""

import contextlib
import errno
import functools
import io
import json
import math
import mmap
import os
import socket
import stat
import struct
import uuid
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import npz_reader

RERUN_HINT = 'Delete it and run the binary that wrote it again.'


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
  return errors.NoSpaceError(
      f'No space left writing {path} ({_NO_SPACE_ERRNOS[code]}): free space '
      'or use another --workdir, then run the command again; finished trials '
      'and the files written before are kept.', code)


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


# What a JSON file of a workdir may hold: our own files are a few KB to a
# few MB (summary.json of a large run) and at most ~8 levels deep.
JSON_MAX_BYTES = 64 << 20
JSON_MAX_DEPTH = 64


def _json_depth(value):
  """The nesting depth of a parsed JSON value (a scalar: 0), iteratively."""
  depth, level = 0, [value]
  while level:
    containers = [v for v in level if isinstance(v, (dict, list))]
    if not containers:
      break
    depth += 1
    level = [item for v in containers
             for item in (v.values() if isinstance(v, dict) else v)]
  return depth


def parse_json(payload, path, hint=RERUN_HINT, max_bytes=JSON_MAX_BYTES,
               max_depth=JSON_MAX_DEPTH):
  """The JSON value of `payload` (bytes or str) read from `path`, bounded.

  A file of a workdir is untrusted input: it is refused (a RecordError
  naming `path` and ending in `hint`) when it is larger than `max_bytes`,
  not UTF-8, not JSON, or nested deeper than `max_depth` (a file of
  100,000 `[` would otherwise exhaust the parser's recursion).
  """
  if len(payload) > max_bytes:
    raise errors.RecordError(
        f'{path} holds {len(payload):,} bytes of JSON, more than the '
        f'{max_bytes:,} a file of this tool ever holds: it was altered or '
        f'not written by this package. {hint}')
  try:
    text = payload.decode() if isinstance(payload, bytes) else payload
    value = json.loads(text)
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError included
    raise errors.RecordError(
        f'{path} is not valid JSON ({" ".join(str(e).split())}): it was '
        f'altered or corrupted. {hint}') from e
  except RecursionError as e:
    raise errors.RecordError(
        f'{path} holds JSON nested deeper than Python can parse: it was '
        f'altered or not written by this package. {hint}') from e
  if _json_depth(value) > max_depth:
    raise errors.RecordError(
        f'{path} holds JSON nested deeper than {max_depth} levels: it was '
        f'altered or not written by this package. {hint}')
  return value


def read_json(path, hint=RERUN_HINT, max_bytes=JSON_MAX_BYTES):
  """parse_json of the file `path`, read once (see read_bytes)."""
  return parse_json(read_bytes(path, hint), path, hint, max_bytes)


def atomic_write_text(path, text):
  """Writes (or replaces) a text file atomically."""
  atomic_replace(path, text.encode())


def npz_bytes(arrays):
  """An .npz file (no pickles) of a dict of arrays, as bytes."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def open_regular(path, hint=RERUN_HINT):
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
    raise errors.RecordError(f'{path} is {kind}, not a regular file: nothing '
                             f'is read from it. Remove it. {hint}')
  return os.fdopen(fd, 'rb')


def read_bytes(path, hint=RERUN_HINT):
  """The bytes of a file: local paths directly (regular files only, see
  open_regular), URLs through tf.io.gfile; `hint` ends the error's
  message."""
  if '://' not in path:
    with open_regular(path, hint) as f:
      return f.read()
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def mapped_bytes(path, hint=RERUN_HINT):
  """A local file's bytes mapped read-only (mmap): only the pages a reader
  touches are read from disk, so a caller that uses a few members of an
  .npz (npz_views) reads those. URLs: read_bytes. An empty file is b''."""
  if '://' in path:
    return read_bytes(path, hint)
  with open_regular(path, hint) as f:
    if not os.fstat(f.fileno()).st_size:
      return b''
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def npz_error(path, e, hint=RERUN_HINT):
  return errors.RecordError(
      f'{path} is truncated or not a valid record ({type(e).__name__}: '
      f'{e}). {hint}')


# The most a workdir's .npz may hold decompressed: a record or dataset file
# (even compressed) expands far less than 16x; a zip bomb ~1000x.
NPZ_MIN_BOUND = 64 << 20
NPZ_MAX_RATIO = 16


def load_npz(path, payload=None, hint=RERUN_HINT, max_bytes=None):
  """The arrays of an .npz file (allow_pickle=False), or a RecordError
  ending in `hint`.

  Read by npz_reader, bounded: a file whose members declare more than
  `max_bytes` decompressed (default max(NPZ_MIN_BOUND, NPZ_MAX_RATIO x its
  size)) is refused before anything is decompressed, and no member is
  decompressed past its declared size. Members that are no .npy array are
  not read.
  """
  try:
    if payload is None:
      payload = read_bytes(path, hint)
    # Not np.load's guess (a file that is no zip is tried as a pickle).
    archive = npz_reader.Archive(path, payload, errors.RecordError, hint)
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise npz_error(path, e, hint) from e
  if max_bytes is None:
    max_bytes = max(NPZ_MIN_BOUND, NPZ_MAX_RATIO * len(payload))
  declared = archive.declared_bytes()
  if declared > max_bytes:
    largest = archive.largest()
    raise errors.RecordError(
        f'{path} declares {npz_reader.size_text(declared)} of arrays once '
        f'decompressed (its {largest}: '
        f'{archive.header(largest).describe()}), more than the '
        f'{npz_reader.size_text(max_bytes)} a file of '
        f'{npz_reader.size_text(len(payload))} may hold here: refused '
        'before decompressing it (it was altered, or made to exhaust '
        f'memory). {hint}')
  return {key: archive.array(key) for key in archive.keys()}


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


def npz_views(payload, unchecked=()):
  """The arrays of an uncompressed .npz as read-only views of `payload`.

  What np.load(allow_pickle=False) returns for np.savez's files, without its
  per-member costs; None for anything else (compressed members, other
  .npy versions, non-.npy members), which np.load then reads. Raises
  ValueError or zipfile.BadZipFile on a malformed file, as np.load does.

  Args:
    payload: the file's bytes, or their mmap (mapped_bytes: the members'
      bytes are then read when touched).
    unchecked: members whose zip CRC is not checked (the caller verifies
      them another way, e.g. the records' sha256).
  """
  source = payload if isinstance(payload, mmap.mmap) else io.BytesIO(payload)
  with zipfile.ZipFile(source) as archive:
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


# --------------------------------------------------------------------------
# Output folders: checked before work starts, swapped in whole when done


def check_writable(workdir, flag='--workdir', shown=None):
  """Creates `workdir` and checks a file can be written there.

  Args:
    workdir: the directory.
    flag: the flag that named it, for the error message.
    shown: the path the message names (default `workdir`; e.g. the final
      folder of a staging folder).

  Returns:
    The topmost directory this call created (None if `workdir` existed), for
    remove_if_empty when the run fails before writing anything.
  """
  # A name of its own: workers sharing the workdir start together.
  probe = os.path.join(workdir, f'.write_probe-{uuid.uuid4().hex}')
  created = None
  try:
    if '://' not in workdir:  # object stores have no empty directories
      path = os.path.abspath(workdir)
      while not os.path.exists(path):
        created, path = path, os.path.dirname(path)
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    remove_if_empty(created)
    full = no_space_error(workdir, e)
    if full is not None:
      raise full from e
    raise errors.UserError(f'Cannot write to {flag}={shown or workdir} ({e}). '
                           'Choose a writable directory, or fix its '
                           'permissions.') from e
  return created


def remove_if_empty(directory):
  """Removes the local `directory` (made by check_writable) if it holds no
  files, so that a run failing on bad input leaves no trace of itself.

  Directories are removed bottom-up with os.rmdir, which fails on one that is
  not empty: a file another process writes meanwhile is never lost.
  """
  if not directory or not os.path.isdir(directory):
    return
  try:
    for root, _, _ in os.walk(directory, topdown=False):
      os.rmdir(root)
  except OSError:
    pass  # not empty: it is kept


_STAGE = '.tmp-'
_OLD = '.old-'


def owner_is_dead(owner):
  """Whether `owner` (host:pid:tag) is a process of this host that has exited.

  A killed worker's claims are taken over at once by a rerun on the same
  host; on other hosts they expire with their lease.
  """
  host, _, rest = owner.partition(':')
  pid = rest.partition(':')[0]
  if host != socket.gethostname() or not pid.isdigit():
    return False
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, another user's
    return False
  return False


def _owner_tag():
  """pid-random@host: names a staging folder after the process writing it."""
  return f'{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}'


def _dead_owner(name, marker):
  """Whether the folder `name` (...<marker>pid-hex@host) is a dead process's."""
  tag = name.rstrip('/').rpartition(marker)[2]
  pid_part, _, host = tag.partition('@')
  pid = pid_part.partition('-')[0]
  return bool(host) and owner_is_dead(f'{host}:{pid}:x')


def _remove_tree(path):
  try:
    if tf.io.gfile.exists(path):
      tf.io.gfile.rmtree(path)
  except (OSError, tf.errors.OpError):
    pass  # a leftover temporary folder; the error being raised says more


def _rename_dir(source, target):
  if '://' not in source:
    os.rename(source, target)  # atomic on one file system
  else:
    tf.io.gfile.rename(source, target, overwrite=False)


def _recover(final):
  """Cleans up after a killed writer of `final`: its staging folders go, and
  a swap killed halfway (`final` moved aside, the new one not yet in place)
  is undone by moving the earlier folder back."""
  parent, base = os.path.split(final.rstrip('/'))
  if not tf.io.gfile.isdir(parent or '.'):
    return
  for name in sorted(tf.io.gfile.listdir(parent or '.')):
    name = name.rstrip('/')
    path = os.path.join(parent, name)
    if name.startswith(base + _OLD) and _dead_owner(name, _OLD):
      if not tf.io.gfile.exists(final):
        _rename_dir(path, final)
      else:
        _remove_tree(path)
    elif name.startswith(base + _STAGE) and _dead_owner(name, _STAGE):
      _remove_tree(path)


@contextlib.contextmanager
def staged_output(final, flag, marker):
  """A temporary folder beside `final`, swapped in for it when the block
  succeeds and removed when it fails.

  A failed run (bad input found late, a full disk, an exception) leaves
  `final` as it was; a successful one replaces it whole, so readers never
  see a mix of two runs. The swap is two renames (`final` aside, the new
  folder in place): a process killed between them leaves `final` absent
  and the earlier folder beside it, which the next run moves back.

  Args:
    final: the output folder (e.g. W/estimates).
    flag: the flag or binding that named it, for the messages.
    marker: a file every folder of ours holds (e.g. summary.json): an
      existing non-empty `final` without it is someone else's folder and is
      refused rather than replaced. None: `final` is ours by its place
      (e.g. W/estimates).

  Yields:
    The staging folder's path.
  """
  final = final.rstrip('/') or final
  _recover(final)
  if tf.io.gfile.exists(final) and not tf.io.gfile.isdir(final):
    raise errors.UserError(f'{flag}={final} is a file, not a folder: choose a '
                           'new or empty folder for the outputs.')
  if marker and tf.io.gfile.isdir(final):
    entries = [e.rstrip('/') for e in tf.io.gfile.listdir(final)]
    if entries and marker not in entries:
      raise errors.UserError(
          f'{flag}={final} holds other files ({", ".join(sorted(entries)[:3])}'
          f'{", ..." if len(entries) > 3 else ""}) and no {marker}: it is '
          'not an output folder of this tool, and its contents would be '
          'replaced. Choose a new or empty folder.')
  tag = _owner_tag()
  stage = f'{final}{_STAGE}{tag}'
  created = check_writable(stage, flag, shown=final)
  try:
    yield stage
  except BaseException:
    _remove_tree(stage)
    remove_if_empty(created)
    raise
  if not tf.io.gfile.exists(final):
    _rename_dir(stage, final)
    return
  old = f'{final}{_OLD}{tag}'
  _rename_dir(final, old)
  try:
    _rename_dir(stage, final)
  except BaseException:
    _rename_dir(old, final)
    raise
  _remove_tree(old)
