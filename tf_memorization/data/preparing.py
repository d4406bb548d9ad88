"""One process prepares a tfds dataset; the others that started with it wait.

tfds prepares a dataset into `<name>/incomplete.XXXXXX_<version>/` and renames
that to `<name>/<version>/` at the end. Processes that start together on a
fresh data dir (the workers of a MultiWorkerMirroredStrategy, one worker per
GPU, a Slurm array) would all prepare, and every rename but the first fails
with FileExistsError (a multi-worker job then hangs at its first collective).
So preparing runs under `exclusive`: the holder prepares, the others wait and
then find the dataset prepared.
"""

import contextlib
import errno
import fcntl
import glob
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
import uuid

import tensorflow as tf
from tensorflow_datasets.core import constants as tfds_constants

from tf_memorization.core import errors
from tf_memorization.core import storage

# A claim (non-local data dirs) not renewed for this long belongs to a dead
# process and is taken over; the holder renews it every third of that.
CLAIM_SECONDS = 120.0
POLL_SECONDS = 2.0

# On NFS, Linux emulates flock with POSIX locks, which are per process: two
# threads of one process would both get the lock there.
_IN_PROCESS = threading.Lock()
# Filesystems that cannot lock (some FUSE mounts, NFS mounted with nolock
# reports ENOLCK), or a lock file opened read-only on NFS (EBADF): these fall
# back to a claim file.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL,
             errno.EBADF)


def is_local(path):
  return '://' not in os.fspath(path)


def lock_path(root, name):
  """The lock file of dataset `name` in the data dir `root`."""
  return os.path.join(os.fspath(root), f'.{name}.prepare.lock')


def claim_path(root, name):
  """The claim file of dataset `name` in a non-local data dir `root`."""
  return os.path.join(os.fspath(root), f'.{name}.prepare.claim')


def _say_waiting(name, root):
  # One line, so that a user knows why the process sits idle.
  print(f'Waiting for another process preparing {name} in {root} ...',
        file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive(root, name):
  """Held by one process at a time per dataset `name` and data dir `root`.

  Why: processes that start together on an unprepared data dir must not all
  prepare (tfds's final rename fails in all but the first). Hold this around
  "is it prepared? (with a fresh builder) -> prepare"; the others wait here,
  printing one line to stderr, and then see the dataset prepared.

  Local paths (NFS included) take an OS lock (flock) on
  `root/.<name>.prepare.lock`, created if needed and never removed (removing
  it would let a waiter and a newcomer lock two different files). Waiting
  blocks in the kernel, and the kernel releases the lock when its holder
  exits or is killed, so the next process then prepares. URLs (gs://...), and
  local filesystems that cannot lock, use a claim file instead (`_claimed`).

  Args:
    root: the tfds data dir (a builder's `data_dir_root`).
    name: the dataset's tfds name.

  Raises:
    OSError: the lock file cannot be created (e.g. the data dir is
      read-only), so nothing can be prepared there either.
  """
  root = os.fspath(root)
  with _IN_PROCESS:
    if not is_local(root):
      with _claimed(root, name):
        yield
      return
    os.makedirs(root, exist_ok=True)
    path = lock_path(root, name)
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
      if not os.path.exists(path):
        raise
      fd = os.open(path, os.O_RDONLY)  # another user's lock file: flock works
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        _say_waiting(name, root)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
      os.close(fd)
      if e.errno not in _NO_LOCKS:
        raise
      with _claimed(root, name):
        yield
      return
    try:
      yield
    finally:
      os.close(fd)  # releases the lock


def remove_stale_incomplete(dataset_dir):
  """Removes what killed preparers left of `dataset_dir` (local paths only).

  tfds names each attempt's directory `incomplete.<random>_<version>` and only
  ignores those of earlier attempts, which keep their disk space. Call this
  while holding `exclusive`: no cooperating process is preparing then (a
  `tfds build` run by hand on the same dir at the same time would lose its
  work).

  Args:
    dataset_dir: a builder's `data_dir` (`root/<name>[/<config>]/<version>`).
  """
  dataset_dir = os.fspath(dataset_dir)
  if not is_local(dataset_dir):
    return
  parent, version = os.path.split(dataset_dir.rstrip('/'))
  pattern = os.path.join(glob.escape(parent),
                         f'{tfds_constants.INCOMPLETE_PREFIX}*_{version}')
  for stale in glob.glob(pattern):
    if os.path.isdir(stale) and not os.path.islink(stale):
      shutil.rmtree(stale, ignore_errors=True)


def _claim_payload(owner):
  return json.dumps({'owner': owner,
                     'expires': time.time() + CLAIM_SECONDS}).encode()


def _read_claim(path):
  """(owner, expires) of the claim at `path`, or None when there is none."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      claim = storage.parse_json(f.read() or b'{}', path, max_bytes=1 << 16)
    owner, expires = claim['owner'], claim['expires']
    if isinstance(owner, str) and isinstance(expires, (int, float)) and (
        math.isfinite(expires)):
      return owner, float(expires)
  except tf.errors.NotFoundError:
    return None
  except (errors.RecordError, KeyError, TypeError):
    pass  # being written, or damaged: judged by its age
  try:
    mtime = tf.io.gfile.stat(path).mtime_nsec / 1e9
  except tf.errors.NotFoundError:
    return None
  return 'unknown', mtime + CLAIM_SECONDS


def _write_claim(path, owner, overwrite):
  """Writes the claim; False when it exists and `overwrite` is False."""
  payload = _claim_payload(owner)
  if is_local(path) and not overwrite:
    try:  # created exclusively, also on NFS
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as f:
      f.write(payload)
    return True
  # Written whole under a unique name, then renamed: readers never see a
  # partial claim (gfile's no-overwrite rename checks, then renames).
  # Not `path` + a suffix: ram:// (the tests' filesystem) takes `path` to
  # exist while a longer name starting with it does.
  head, tail = os.path.split(path)
  tmp = os.path.join(head, f'.tmp-{uuid.uuid4().hex}-{tail}')
  with tf.io.gfile.GFile(tmp, 'wb') as f:
    f.write(payload)
  try:
    tf.io.gfile.rename(tmp, path, overwrite=overwrite)
    return True
  except tf.errors.AlreadyExistsError:
    tf.io.gfile.remove(tmp)
    return False


@contextlib.contextmanager
def _claimed(root, name):
  """Holds the claim file `root/.<name>.prepare.claim` (no OS lock there).

  The claim holds its owner and an expiry, renewed by a thread while held and
  deleted on exit; waiters poll every POLL_SECONDS and take over a claim whose
  expiry has passed (its holder died). Limits: on object stores gfile's
  no-overwrite rename checks and then renames, so processes claiming within
  the same instant may both win (each re-reads the claim and only the last
  writer proceeds, which narrows but does not close that window), and two
  takeovers of one expired claim can race alike; the loser of such a race
  fails in tfds's rename, as without the claim. A holder that stalls longer
  than CLAIM_SECONDS (no renewal) loses its claim. A killed holder blocks the
  others for up to CLAIM_SECONDS.
  """
  path = claim_path(root, name)
  owner = f'{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}'
  tf.io.gfile.makedirs(root)
  said = False
  while True:
    current = _read_claim(path)
    if current is None:
      won = _write_claim(path, owner, overwrite=False)
    elif current[1] <= time.time():
      won = _write_claim(path, owner, overwrite=True)  # a dead holder's
    else:
      won = False
    if won and (_read_claim(path) or ('',))[0] == owner:
      break
    if not said:
      _say_waiting(name, root)
      said = True
    time.sleep(POLL_SECONDS)
  stop = threading.Event()

  def renew():
    while not stop.wait(CLAIM_SECONDS / 3):
      try:
        if (_read_claim(path) or ('',))[0] == owner:
          _write_claim(path, owner, overwrite=True)
      except (OSError, tf.errors.OpError):
        pass  # retried at the next tick; the claim lasts CLAIM_SECONDS

  renewer = threading.Thread(target=renew, daemon=True,
                             name='tf_memorization-prepare-claim')
  renewer.start()
  try:
    yield
  finally:
    stop.set()
    renewer.join()
    if (_read_claim(path) or ('',))[0] == owner:
      try:
        tf.io.gfile.remove(path)
      except tf.errors.NotFoundError:
        pass
