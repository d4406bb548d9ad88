"""Claims with expiry, so that workers sharing a workdir train each job once.

Before training a job a worker claims it by creating
`<directory>/claims/trial_000042.claim` if it does not exist (O_EXCL on local
and NFS paths; gfile's no-overwrite rename elsewhere). The claim holds its
owner and an expiry time, renewed by a background thread while the worker
lives; a claim whose expiry has passed belongs to a dead worker and is taken
over. The record, not the claim, is the truth: a claim is deleted once its
record is written, and a job whose record exists is never trained again.

Races are bounded: two workers can both take over the same expired claim (the
later write wins, both may train), which costs one extra training and no
corrupt record (records are written atomically without overwrite).
"""

import json
import math
import os
import socket
import threading
import time
import uuid

import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage

_CLAIM_MAX_BYTES = 1 << 16  # a claim is one short JSON object
LEASE_SECONDS = 600.0


def _is_local(path):
  return '://' not in path


def claim_path(directory, index):
  return os.path.join(directory, files.CLAIMS_DIR, f'trial_{index:06d}.claim')


class Leases:
  """The claims one worker holds in one directory; renewed in the background.

  Args:
    directory: where the records (and claims/) live.
    lease_seconds: a claim not renewed for this long is taken over.
    owner: this worker's name (default host:pid:random).
  """

  def __init__(self, directory, lease_seconds=LEASE_SECONDS, owner=None):
    self.directory = directory
    self.lease_seconds = float(lease_seconds)
    self.owner = owner or (f'{socket.gethostname()}:{os.getpid()}:'
                           f'{uuid.uuid4().hex[:8]}')
    self._held = set()
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None

  def _payload(self):
    return json.dumps({'owner': self.owner,
                       'expires': time.time() + self.lease_seconds}).encode()

  def _create(self, path):
    """Creates the claim file if absent; whether this call created it."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    if not _is_local(path):
      return storage.atomic_write(path, self._payload())
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as f:
      f.write(self._payload())
    return True

  def expired(self, index):
    """Whether job `index` is unclaimed or its claim's worker is gone."""
    current = self.read(index)
    return (current is None or current[1] <= time.time()
            or storage.owner_is_dead(current[0]))

  def read(self, index):
    """(owner, expires) of a job's claim, or None when there is none."""
    path = claim_path(self.directory, index)
    try:
      with tf.io.gfile.GFile(path, 'rb') as f:
        content = storage.parse_json(f.read() or b'{}', path,
                                     max_bytes=_CLAIM_MAX_BYTES)
    except tf.errors.NotFoundError:
      return None
    except errors.RecordError:
      content = {}  # being written, or damaged: judge it by its age
    if not isinstance(content, dict) or not isinstance(
        content.get('owner', ''), str) or not (
            isinstance(content.get('expires'), (int, float))
            and math.isfinite(content['expires'])):
      content = {}  # not a claim of ours: judged by its age
    if 'expires' not in content:
      try:
        mtime = tf.io.gfile.stat(path).mtime_nsec / 1e9
      except tf.errors.NotFoundError:
        return None
      return ('unknown', mtime + self.lease_seconds)
    return (content.get('owner', 'unknown'), float(content['expires']))

  def claim(self, index):
    """Claims job `index`; False when a live worker holds it."""
    path = claim_path(self.directory, index)
    if self._create(path):
      with self._lock:
        self._held.add(index)
      return True
    current = self.read(index)
    if current is None:  # released meanwhile
      return self.claim(index)
    owner, expires = current
    if owner == self.owner:
      return True
    if expires > time.time() and not storage.owner_is_dead(owner):
      return False
    # A dead worker's claim: take it over, then check that this write won.
    storage.atomic_replace(path, self._payload())
    current = self.read(index)
    if current is None or current[0] != self.owner:
      return False
    with self._lock:
      self._held.add(index)
    return True

  def release(self, index):
    path = claim_path(self.directory, index)
    with self._lock:
      self._held.discard(index)
    current = self.read(index)
    if current is not None and current[0] == self.owner:
      try:
        tf.io.gfile.remove(path)
      except tf.errors.NotFoundError:
        pass

  def renew(self):
    with self._lock:
      held = sorted(self._held)
    for index in held:
      current = self.read(index)
      if current is not None and current[0] == self.owner:
        storage.atomic_replace(claim_path(self.directory, index),
                               self._payload())

  def _renew_loop(self):
    while not self._stop.wait(self.lease_seconds / 3):
      try:
        self.renew()
      except (OSError, tf.errors.OpError):
        pass  # retried at the next tick; the claim lasts a whole lease

  def __enter__(self):
    self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                    name='tf_memorization-leases')
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    with self._lock:
      held = sorted(self._held)
    for index in held:
      self.release(index)
    return False
