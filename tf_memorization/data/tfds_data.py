"""tfds builders: preparing any of them, offline where it can, and reading
a split in tfds's deterministic order.

`prepare_builder` tries every registered builder (tfds's own, the bundled
`sklearn_digits`, a user's own registered by a gin `import`): one that reads
local files prepares with no network. Only a download that cannot happen
(downloads off, or the URL's own host unreachable) or a manual download
that is missing stops it, at once and naming what is missing; there is no
probe of a fixed host and no guess from the dataset's name.
"""

import contextlib
import errno
import os
import socket
import urllib.parse

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_memorization.core import errors
import tf_memorization.data.datasets  # pylint: disable=unused-import  (registers builders)
from tf_memorization.data import preparing


def _reachable(host, port, timeout=3.0):
  """Whether a TCP connection to host:port opens within `timeout` seconds."""
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


# The class attribute itself (attribute access would build a new wrapt
# wrapper each time); tfds.testing.mock_data replaces it.
_ORIGINAL_DOWNLOAD_AND_PREPARE = vars(
    tfds.core.DatasetBuilder)['download_and_prepare']


def _download_is_mocked():
  return (vars(tfds.core.DatasetBuilder)['download_and_prepare']
          is not _ORIGINAL_DOWNLOAD_AND_PREPARE)


class _DownloadRefused(Exception):
  """A builder asked for a URL that cannot be downloaded here."""

  def __init__(self, url, reason):
    super().__init__(f'{url}: {reason}')
    self.url, self.reason = url, reason


@contextlib.contextmanager
def _guarded_downloads(allowed):
  """Makes every download a builder starts fail at once, naming its URL,
  when downloads are off or the URL's own host cannot be reached (tfds
  would retry for minutes). Files already in the download cache, and
  builders that read local files, never get here."""
  manager = tfds.download.DownloadManager
  original = vars(manager).get('_download')
  if original is None:  # another tfds: no guard, tfds's own errors
    yield
    return

  def guarded(self, resource):
    url = getattr(resource, 'url', resource)
    if not allowed:
      raise _DownloadRefused(url, 'downloads are off (load_dataset.download '
                             '= False)')
    parsed = urllib.parse.urlparse(str(url))
    port = parsed.port or (80 if parsed.scheme == 'http' else 443)
    if parsed.hostname and not _reachable(parsed.hostname, port):
      raise _DownloadRefused(url, f'{parsed.hostname} cannot be reached from '
                             'this machine')
    return original(self, resource)

  manager._download = guarded  # pylint: disable=protected-access
  try:
    yield
  finally:
    manager._download = original  # pylint: disable=protected-access


def _prepare_instructions(name, data_dir):
  where = data_dir or '~/tensorflow_datasets'
  return (f'On a machine with network run `tfds build {name} '
          f'--data_dir=DIR` (for your own builder: with its module imported, '
          f'e.g. `tfds build --imports=my_package.my_builder {name}`), copy '
          f'DIR to {where} here or pass --data_dir=DIR (or bind '
          f'load_dataset.data_dir).')


def _missing_manual_dir(builder):
  """The manual-download folder a builder needs and lacks, or None.

  A builder that declares MANUAL_DOWNLOAD_INSTRUCTIONS (e.g. imagenet2012)
  reads files the user puts in <data_dir>/downloads/manual.
  """
  if not getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None):
    return None
  manual = os.path.join(os.fspath(builder.data_dir_root), 'downloads',
                        'manual')
  if os.path.isdir(manual) and os.listdir(manual):
    return None
  return manual


def prepare_builder(name, data_dir=None, download=True):
  """Returns a prepared tfds builder, or raises DataNotPreparedError quickly.

  Any registered builder is prepared when it is not yet: one that reads
  local files (a user's own builder, registered by a gin `import`; the
  bundled sklearn_digits) prepares with no network. Only when preparing
  actually starts a download that cannot happen (downloads are off, or the
  URL's host is unreachable), or needs manually downloaded files that are
  not there, does this fail, at once and naming what is missing.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.DataNotPreparedError(
        f'Unknown dataset {name!r}: bind load_dataset.name to a tfds dataset '
        'or a builder registered in this process. For your own builder, '
        'import its module in your gin file (`import my_package.my_builder`)'
        ' and pass that file with --gin_file; built-in: cifar10, cifar100, '
        'mnist, imagenet2012, sklearn_digits.') from e
  if builder.is_prepared():
    return builder
  manual = None if _download_is_mocked() else _missing_manual_dir(builder)
  if manual:
    raise errors.DataNotPreparedError(
        f'Dataset {name} is not prepared in {builder.data_dir_root} and needs '
        f'files downloaded by hand into {manual}: '
        + ' '.join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
        + f' Then run `tfds build {name} --data_dir={builder.data_dir_root}` '
        'once, or let the train binary prepare it.')
  return _prepare(name, data_dir, builder, download)


def _prepare(name, data_dir, builder, download):
  """Prepares `builder`'s dataset unless another process did it meanwhile.

  Only under `preparing.exclusive`, so processes starting together on a fresh
  data dir prepare once; the root is the builder's, which also resolves
  data_dir None to tfds's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
  tfds's mirror of prepared datasets is not tried (on a machine without
  network it retries for minutes): every dataset is prepared from its own
  sources.
  """
  root = os.fspath(builder.data_dir_root)
  # Folders preparing creates; removed again (when empty) after a refused
  # download, so that a refusal leaves the data dir as it was.
  fresh = [d for d in (os.path.join(root, 'downloads'),
                       os.path.join(root, builder.name))
           if '://' not in root and not os.path.exists(d)]
  try:
    with preparing.exclusive(root, builder.name):
      # A fresh builder: one made before another process finished preparing
      # still holds the unprepared state.
      builder = tfds.builder(name, data_dir=data_dir)
      if not builder.is_prepared():
        preparing.remove_stale_incomplete(builder.data_dir)
        with _guarded_downloads(download):
          builder.download_and_prepare(
              download_config=tfds.download.DownloadConfig(
                  try_download_gcs=False))
  except _DownloadRefused as e:
    for folder in fresh:
      _remove_empty_folders(folder)
    raise errors.DataNotPreparedError(
        f'Dataset {name} is not prepared in {root}, and preparing it '
        f'downloads {e.url}, but {e.reason}. '
        + _prepare_instructions(name, data_dir)) from None
  except OSError as e:
    if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
      raise
    raise errors.DataNotPreparedError(
        f'Dataset {name} is not prepared in {root} and cannot be prepared '
        f'there ({e}). Pass a writable data dir, or prepare it once where '
        f'you can write: ' + _prepare_instructions(name, data_dir)) from e
  return builder


def _remove_empty_folders(top):
  """Removes `top` and the folders under it, where empty (bottom up)."""
  for folder, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(folder)
    except OSError:
      pass  # not empty: something of value is there


# Features that name an example in its source's own order or by its file,
# read as each example's source id (the paper's released scores use them).
SOURCE_ID_FEATURES = ('id', 'file_name', 'index')


def source_id_feature(builder):
  """The feature of `builder` that identifies an example in its source (the
  CIFAR 'id' "train_16399", ImageNet's 'file_name', the digits' 'index'), or
  None."""
  features = getattr(builder.info, 'features', None) or {}
  for name in SOURCE_ID_FEATURES:
    if name in features:
      return name
  return None


def read_split(builder, split, with_images=True):
  """Reads a split in tfds's deterministic order (images only if asked).

  Returns:
    (uint8 images [N, H, W, C] or None, int64 labels [N], str tfds ids [N],
    str source ids [N]: each example's id in its source (see
    `source_id_feature`), '' where the builder has none).
  """
  source = source_id_feature(builder)
  decoders = None if with_images else {'image': tfds.decode.SkipDecoding()}
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                          read_config=tfds.ReadConfig(add_tfds_id=True))
  if not with_images:
    keep = ('label', 'tfds_id') + ((source,) if source else ())
    ds = ds.map(lambda ex: {k: ex[k] for k in keep},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  images, labels, ids, sources = [], [], [], []
  for batch in tfds.as_numpy(ds.batch(8192)):
    if with_images:
      images.append(batch['image'])
    labels.append(batch['label'])
    ids.append(batch['tfds_id'])
    if source:
      sources.append(np.asarray(batch[source]).astype(str))
  if not labels:
    raise errors.DataNotPreparedError(
        f'Split {split!r} of {builder.name} is empty.')
  ids = np.concatenate(ids).astype(str)
  sources = (np.concatenate(sources) if source
             else np.full(len(ids), '', dtype=str))
  return (np.concatenate(images).astype(np.uint8) if with_images else None,
          np.concatenate(labels).astype(np.int64), ids, sources)
