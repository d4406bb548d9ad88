"""Tests for tf_memorization.data.pipelines: loading, augmentation and the pipelines.

Expectations are computed here with numpy from the uint8 images that
`load_dataset` returns; yielded images are matched back to dataset indices by
their exact pixel values (the digits' train images are pairwise distinct, which
the `digits` fixture checks).
"""

import glob
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_memorization.data.datasets import sklearn_digits
from tf_memorization.data import pipelines
from tf_memorization.data import preparing

from conftest import REPO

NONE = pipelines.Preprocessing(augment='none')
DIGITS_STD = np.float32(255.0)  # sklearn_digits is normalised as x / 255


def _take(ds, num_batches):
  """The first `num_batches` (images, labels) of `ds` as numpy arrays."""
  xs, ys = [], []
  for x, y in ds.take(num_batches):
    xs.append(x.numpy())
    ys.append(y.numpy())
  return xs, ys


@pytest.fixture(scope='module')
def digits(digits_data_dir):
  dataset = pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)
  flat = dataset.train.images.reshape(len(dataset.train), -1)
  # Matching yielded images back to indices needs distinct images.
  assert len(np.unique(flat, axis=0)) == len(flat)
  return dataset


@pytest.fixture(scope='module')
def pipeline(digits):
  return pipelines.InMemoryPipeline(digits, NONE)


@pytest.fixture(scope='module')
def index_of(digits):
  """Maps a normalised digits image back to its train index (exact pixels)."""
  lookup = {img.tobytes(): i for i, img in enumerate(digits.train.images)}

  def find(normalised_images):
    pixels = np.asarray(normalised_images, np.float32) * DIGITS_STD
    as_uint8 = np.round(pixels).astype(np.uint8)
    # The normalisation must be exactly invertible, or the match means nothing.
    np.testing.assert_allclose(pixels, as_uint8, atol=1e-3)
    return np.array([lookup.get(img.tobytes(), -1) for img in as_uint8])

  return find


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
  """Every test here must run offline."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args} {kwargs}')

  # AssertionError, not OSError: no library retries it or takes it for an
  # ordinary connection failure.
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)
  monkeypatch.setattr(socket.socket, 'connect', refuse)


# --------------------------------------------------------------------------
# InMemoryPipeline.train


def test_train_epoch_is_a_permutation_of_the_subset(digits, pipeline,
                                                    index_of):
  rng = np.random.default_rng(0)
  batch, m = 32, 96  # m is a multiple of the batch size
  subset = np.sort(rng.choice(len(digits.train), m, replace=False))
  xs, ys = _take(pipeline.train(subset, batch, seed=7), 2 * m // batch)
  assert all(x.shape == (batch, 8, 8, 1) for x in xs)
  assert all(y.shape == (batch, 10) for y in ys)
  found = index_of(np.concatenate(xs))
  labels = np.concatenate(ys)
  assert np.all(found >= 0)
  assert set(found) <= set(subset)  # only examples of the subset
  for epoch in (found[:m], found[m:]):  # each epoch sees each example once
    np.testing.assert_array_equal(np.sort(epoch), subset)
  # labels are the one-hot of the gathered examples' labels
  np.testing.assert_array_equal(labels, np.eye(10)[digits.train.labels[found]])
  # the subset is shuffled, and reshuffled between epochs
  assert not np.array_equal(found[:m], subset)
  assert not np.array_equal(found[:m], found[m:])


def test_train_batches_run_across_epoch_boundaries(digits, pipeline, index_of):
  """m not a multiple of B: every consecutive run of m examples is an epoch."""
  rng = np.random.default_rng(1)
  batch, m = 32, 50
  subset = np.sort(rng.choice(len(digits.train), m, replace=False))
  xs, _ = _take(pipeline.train(subset, batch, seed=3), 3 * m // batch + 1)
  assert all(len(x) == batch for x in xs)  # no partial batch at an epoch end
  found = index_of(np.concatenate(xs))
  for epoch in range(3):
    np.testing.assert_array_equal(np.sort(found[epoch * m:(epoch + 1) * m]),
                                  subset)


def test_train_stream_is_determined_by_seed(digits, pipeline):
  subset = np.arange(0, 400, 3)
  steps = 10  # more than one epoch of 134 examples
  first, first_y = _take(pipeline.train(subset, 32, seed=11), steps)
  # A fresh pipeline object too: nothing may depend on pipeline state.
  other_pipeline = pipelines.InMemoryPipeline(digits, NONE)
  again, again_y = _take(other_pipeline.train(subset, 32, seed=11), steps)
  for a, b in zip(first + first_y, again + again_y):
    np.testing.assert_array_equal(a, b)
  different, _ = _take(pipeline.train(subset, 32, seed=12), steps)
  assert not np.array_equal(np.concatenate(first), np.concatenate(different))


def test_train_augmentation_is_deterministic_per_seed(digits):
  """With crop_flip, the augmented stream is still a function of the seed."""
  augmenting = pipelines.InMemoryPipeline(
      digits, pipelines.Preprocessing(augment='crop_flip', crop_padding=2))
  subset = np.arange(64)
  a, _ = _take(augmenting.train(subset, 16, seed=5), 6)
  b, _ = _take(augmenting.train(subset, 16, seed=5), 6)
  np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
  plain, _ = _take(pipelines.InMemoryPipeline(digits, NONE).train(subset, 16, 5), 6)
  # Same shuffle (same seed) but augmented images: some differ from the plain.
  assert not np.array_equal(np.concatenate(a), np.concatenate(plain))


# --------------------------------------------------------------------------
# random_crop_flip


def _random_images(batch=200, height=6, width=5, channels=2, seed=0):
  # Continuous random values: no two windows of an image coincide by chance.
  rng = np.random.default_rng(seed)
  return rng.uniform(0.5, 1.5, (batch, height, width, channels)).astype(
      np.float32)


def _crop_offsets(images, out, padding):
  """Per image, every (dy, dx) whose window of the padded image equals out."""
  _, h, w, _ = images.shape
  padded = np.pad(images, [(0, 0), (padding, padding), (padding, padding),
                           (0, 0)])
  offsets = []
  for i in range(len(images)):
    offsets.append([(dy, dx)
                    for dy in range(2 * padding + 1)
                    for dx in range(2 * padding + 1)
                    if np.array_equal(padded[i, dy:dy + h, dx:dx + w], out[i])])
  return offsets


def test_random_crop_is_a_window_of_the_padded_image():
  images = _random_images()
  padding = 2
  out = pipelines.random_crop_flip(tf.constant(images), tf.constant([3, 4]),
                                   padding, crop=True, flip=False).numpy()
  assert out.shape == images.shape
  offsets = _crop_offsets(images, out, padding)
  assert all(len(o) == 1 for o in offsets), 'each image is exactly one window'
  used = {o[0] for o in offsets}
  # 200 draws over 25 offsets: many are used, including the corners' extremes
  assert len(used) > 15
  assert {dy for dy, _ in used} == set(range(2 * padding + 1))
  assert {dx for _, dx in used} == set(range(2 * padding + 1))


def test_random_flip_mirrors_about_half():
  images = _random_images()
  out = pipelines.random_crop_flip(tf.constant(images), tf.constant([3, 4]), 4,
                                   crop=False, flip=True).numpy()
  assert out.shape == images.shape
  same = np.array([np.array_equal(o, x) for o, x in zip(out, images)])
  mirrored = np.array([np.array_equal(o, x[:, ::-1]) for o, x in
                       zip(out, images)])
  assert np.all(same ^ mirrored)  # each image is exactly one of the two
  assert 50 < mirrored.sum() < 150  # both happen, about half each


def test_random_crop_flip_is_a_window_or_its_mirror_and_deterministic():
  images = _random_images(batch=64, seed=1)
  padding = 1
  seed = tf.constant([9, 1], tf.int64)
  out = pipelines.random_crop_flip(tf.constant(images), seed, padding, True,
                                   True).numpy()
  again = pipelines.random_crop_flip(tf.constant(images), seed, padding, True,
                                     True).numpy()
  np.testing.assert_array_equal(out, again)
  other = pipelines.random_crop_flip(tf.constant(images), tf.constant([9, 2],
                                                                      tf.int64),
                                     padding, True, True).numpy()
  assert out.shape == other.shape == images.shape
  assert not np.array_equal(out, other)
  plain = _crop_offsets(images, out, padding)
  flipped = _crop_offsets(images, out[:, :, ::-1], padding)
  assert all(len(p) + len(f) >= 1 for p, f in zip(plain, flipped))
  assert any(len(f) and not len(p) for p, f in zip(plain, flipped))


def test_no_augmentation_is_identity():
  images = _random_images(batch=8)
  out = pipelines.random_crop_flip(tf.constant(images), tf.constant([1, 2]), 4,
                                   crop=False, flip=False)
  np.testing.assert_array_equal(out.numpy(), images)


# --------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize('name, expected', [
    ('cifar10', 'crop_flip'), ('cifar100', 'crop_flip'),
    ('sklearn_digits', 'none'), ('mnist', 'none')])
def test_auto_augmentation_per_dataset(name, expected):
  _, _, augment = pipelines.Preprocessing().resolve(name)
  assert augment == expected


def test_explicit_augmentation_overrides_auto():
  _, _, augment = pipelines.Preprocessing(augment='flip').resolve('cifar10')
  assert augment == 'flip'


def test_unknown_augmentation_raises():
  with pytest.raises(ValueError, match='mixup'):
    pipelines.Preprocessing(augment='mixup').resolve('cifar10')


# --------------------------------------------------------------------------
# InMemoryPipeline.evaluation


@pytest.mark.parametrize('split, batch_size', [('train', 100), ('test', 64)])
def test_evaluation_yields_the_split_in_order(digits, pipeline, split,
                                              batch_size):
  part = digits.train if split == 'train' else digits.test
  xs, ys = _take(pipeline.evaluation(split, batch_size), -1)
  sizes = [len(x) for x in xs]
  assert sizes == [batch_size] * (len(part) // batch_size) + [
      len(part) % batch_size]  # every example once, last batch partial
  expected = part.images.astype(np.float32) / DIGITS_STD
  np.testing.assert_allclose(np.concatenate(xs), expected, rtol=1e-6, atol=0)
  np.testing.assert_array_equal(np.concatenate(ys), np.eye(10)[part.labels])


def test_evaluation_normalises_per_channel():
  """A cifar10-named dataset: (x - mean) / std with cifar10's channel stats."""
  rng = np.random.default_rng(2)

  def split(n):
    return pipelines.Split(
        images=rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
        labels=rng.integers(0, 10, n).astype(np.int64),
        ids=np.array([str(i) for i in range(n)]))

  dataset = pipelines.Dataset(name='cifar10', version='0', num_classes=10,
                              train=split(30), test=split(11))
  pipe = pipelines.InMemoryPipeline(dataset, NONE)
  mean, std, _ = pipelines.DATASET_DEFAULTS['cifar10']
  for name, part in (('train', dataset.train), ('test', dataset.test)):
    xs, ys = _take(pipe.evaluation(name, 8), -1)
    expected = ((part.images.astype(np.float64) - np.array(mean))
                / np.array(std))
    np.testing.assert_allclose(np.concatenate(xs), expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(ys).argmax(-1), part.labels)


# --------------------------------------------------------------------------
# StreamingPipeline


STREAM_PREP = pipelines.Preprocessing(augment='none', image_size=8,
                                      center_crop_fraction=1.0)


@pytest.fixture(scope='module')
def streamed(digits_data_dir):
  return pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir,
                                streaming=True)


def test_streaming_load_has_labels_and_ids_only(digits, streamed):
  assert streamed.streaming and not digits.streaming
  assert streamed.train.images is None and streamed.test.images is None
  for a, b in ((streamed.train, digits.train), (streamed.test, digits.test)):
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.ids, b.ids)
  assert isinstance(pipelines.make_pipeline(streamed, STREAM_PREP),
                    pipelines.StreamingPipeline)
  assert isinstance(pipelines.make_pipeline(digits, NONE), pipelines.InMemoryPipeline)


@pytest.mark.parametrize('split', ['train', 'test'])
def test_streaming_evaluation_equals_in_memory(pipeline, streamed, split):
  stream = pipelines.StreamingPipeline(streamed, STREAM_PREP)
  assert stream.image_shape == (8, 8, 1)
  sx, sy = _take(stream.evaluation(split, 128), -1)
  mx, my = _take(pipeline.evaluation(split, 128), -1)
  np.testing.assert_array_equal(np.concatenate(sx), np.concatenate(mx))
  np.testing.assert_array_equal(np.concatenate(sy), np.concatenate(my))


def test_streaming_train_yields_only_subset_examples(digits, streamed,
                                                     index_of):
  stream = pipelines.StreamingPipeline(streamed, STREAM_PREP)
  rng = np.random.default_rng(4)
  subset = np.sort(rng.choice(len(digits.train), 40, replace=False))
  xs, ys = _take(stream.train(subset, 16, seed=2), 6)  # 96 examples > 2 epochs
  assert all(x.shape == (16, 8, 8, 1) for x in xs)
  found = index_of(np.concatenate(xs))
  assert np.all(found >= 0)
  assert set(found) <= set(subset)
  assert len(set(found)) > 30  # not one example over and over
  np.testing.assert_array_equal(np.concatenate(ys),
                                np.eye(10)[digits.train.labels[found]])


# --------------------------------------------------------------------------
# prepare_builder / load_dataset


def test_unknown_dataset_name_raises(tmp_path):
  with pytest.raises(pipelines.DataNotPreparedError, match='no_such_dataset_xyz'):
    pipelines.load_dataset('no_such_dataset_xyz', data_dir=str(tmp_path))


# Regression: prepare_builder once detected tfds.testing.mock_data with
# `type(builder).download_and_prepare is not <saved attribute>`. tfds wraps
# that method with wrapt, so each class attribute access builds a new wrapper,
# the test was always True, every builder counted as mocked and download=False
# and the network check were skipped: an offline machine then spent ~200 s in
# urllib3 retries. The `_no_network` fixture turns any download attempt into an
# AssertionError, so these tests fail at once if that comes back.


def test_unprepared_dataset_without_download_says_how_to_prepare(tmp_path):
  with pytest.raises(pipelines.DataNotPreparedError) as info:
    pipelines.prepare_builder('mnist', data_dir=str(tmp_path), download=False)
  message = str(info.value)
  assert 'mnist' in message and 'not prepared' in message
  assert 'tfds build mnist' in message
  assert 'downloads are off (load_dataset.download = False)' in message


def test_unprepared_dataset_without_network_says_how_to_prepare(
    tmp_path, monkeypatch):
  def unreachable(*args, **kwargs):
    raise OSError('no route to host')

  # This machine "has no network": a connection to the host of the URL the
  # builder downloads fails, as offline. The refusal names that URL and
  # leaves the data dir as it was (but for the prepare lock).
  monkeypatch.setattr(socket, 'create_connection', unreachable)
  with pytest.raises(pipelines.DataNotPreparedError,
                     match='cannot be reached from this machine') as info:
    pipelines.prepare_builder('mnist', data_dir=str(tmp_path), download=True)
  assert 'tfds build mnist' in str(info.value)
  assert 'https://storage.googleapis.com/cvdf-datasets/mnist/' in str(
      info.value)
  assert os.listdir(tmp_path) == ['.mnist.prepare.lock']


def test_digits_prepare_offline_with_download_off(tmp_path):
  dataset = pipelines.load_dataset('sklearn_digits', data_dir=str(tmp_path),
                                   download=False)
  assert (len(dataset.train), len(dataset.test)) == (1442, 355)


def test_load_dataset_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    dataset = pipelines.load_dataset('cifar10', data_dir=str(tmp_path))
  assert dataset.num_classes == 10
  assert len(dataset.train) == 20 and len(dataset.test) == 20
  assert dataset.image_shape == (32, 32, 3)
  assert dataset.train.images.shape == (20, 32, 32, 3)
  assert dataset.train.images.dtype == np.uint8
  for part in (dataset.train, dataset.test):
    assert len(np.unique(part.ids)) == 20
    assert np.all((part.labels >= 0) & (part.labels < 10))
  described = dataset.describe()
  assert described['num_train'] == 20
  assert described['image_shape'] == [32, 32, 3]


# --------------------------------------------------------------------------
# Preparing from several processes at once

# Imports TensorFlow, says so, then waits for the go file, so that all
# processes prepare at the same moment. Every generation of the dataset
# prints GENERATING; mode 'stall' then holds the lock until killed.
_PREPARER = r"""
import os, sys, time
from tf_memorization.data.datasets import sklearn_digits
from tf_memorization.data import pipelines

data_dir, ready, go, mode = sys.argv[1:5]
generate = sklearn_digits.SklearnDigits._split_generators

def counted(self, dl_manager):
  print('GENERATING', file=sys.stderr, flush=True)
  if mode == 'stall':
    time.sleep(600)
  return generate(self, dl_manager)

sklearn_digits.SklearnDigits._split_generators = counted
open(ready, 'w').close()
while not os.path.exists(go):
  time.sleep(0.005)
pipelines.prepare_builder('sklearn_digits', data_dir)
"""
_WAITING = 'Waiting for another process preparing sklearn_digits'


def _start_preparers(tmp_path, data_dir, modes):
  """Starts one process per mode; returns them and their log paths."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  procs, logs = [], []
  for i, mode in enumerate(modes):
    log = tmp_path / f'preparer{i}.log'
    with open(log, 'wb') as out:
      procs.append(subprocess.Popen(
          [sys.executable, '-c', _PREPARER, data_dir,
           str(tmp_path / f'ready{i}'), str(tmp_path / f'go{i}'), mode],
          cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    logs.append(log)
  return procs, logs


def _wait_for(condition, procs, timeout=60.0):
  deadline = time.time() + timeout
  while not condition():
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      raise AssertionError('preparer processes did not get there in time')
    time.sleep(0.02)


def _finish(procs, timeout=60.0):
  try:
    return [p.wait(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def _assert_equal_datasets(a, b):
  for x, y in ((a.train, b.train), (a.test, b.test)):
    np.testing.assert_array_equal(x.labels, y.labels)
    np.testing.assert_array_equal(x.ids, y.ids)
    np.testing.assert_array_equal(x.images, y.images)


@pytest.mark.slow
def test_processes_starting_together_prepare_once(tmp_path, digits):
  """Without the lock 2 of the 3 died in tfds's rename (5 runs of 5)."""
  data_dir = str(tmp_path / 'tfds')
  count = 3
  procs, logs = _start_preparers(tmp_path, data_dir, ['count'] * count)
  _wait_for(lambda: all((tmp_path / f'ready{i}').exists()
                        for i in range(count)), procs)
  for i in range(count):  # all imported TensorFlow: start them together
    (tmp_path / f'go{i}').touch()
  codes = _finish(procs)
  outputs = [log.read_text(errors='replace') for log in logs]
  assert codes == [0] * count, '\n'.join(outputs)
  everything = ''.join(outputs)
  assert everything.count('GENERATING') == 1, everything
  # Each of the others waited (one line each) or came after the preparer.
  assert all(out.count(_WAITING) <= 1 for out in outputs)
  assert everything.count(_WAITING) + 1 <= count
  assert os.path.exists(preparing.lock_path(data_dir, 'sklearn_digits'))
  assert not glob.glob(os.path.join(data_dir, 'sklearn_digits', 'incomplete*'))
  # The same data as one process alone prepares.
  _assert_equal_datasets(pipelines.load_dataset('sklearn_digits',
                                                data_dir=data_dir), digits)


@pytest.mark.slow
def test_killed_preparer_does_not_block_the_next(tmp_path, digits, capfd,
                                                 monkeypatch):
  """The holder is killed while this process waits for the lock."""
  data_dir = str(tmp_path / 'tfds')
  procs, logs = _start_preparers(tmp_path, data_dir, ['stall'])
  holder = procs[0]
  (tmp_path / 'go0').touch()
  # The holder has the lock and an incomplete dir, and stalls in generating.
  _wait_for(lambda: 'GENERATING' in logs[0].read_text(errors='replace'),
            procs)
  assert glob.glob(os.path.join(data_dir, 'sklearn_digits', 'incomplete*'))
  generated, killed = [], []
  generate = sklearn_digits.SklearnDigits._split_generators

  def counted(self, dl_manager):
    # When this process generates, against when the holder was killed (its
    # poll() can still read None here: the kernel frees a dying process's
    # lock before its exit status can be collected).
    generated.append(time.monotonic())
    return generate(self, dl_manager)

  def kill():
    killed.append(time.monotonic())
    holder.send_signal(signal.SIGKILL)

  monkeypatch.setattr(sklearn_digits.SklearnDigits, '_split_generators',
                      counted)
  killer = threading.Timer(1.0, kill)
  killer.start()
  try:
    builder = pipelines.prepare_builder('sklearn_digits', data_dir)
  finally:
    killer.cancel()
    _finish(procs)
  assert holder.returncode == -signal.SIGKILL
  # This process waited (one line), then prepared after the holder died.
  assert capfd.readouterr().err.count(_WAITING) == 1
  assert len(generated) == 1 and len(killed) == 1
  assert generated[0] >= killed[0]
  assert builder.is_prepared()
  # The killed attempt's incomplete dir was removed before preparing again.
  assert not glob.glob(os.path.join(data_dir, 'sklearn_digits', 'incomplete*'))
  _assert_equal_datasets(pipelines.load_dataset('sklearn_digits',
                                                data_dir=data_dir), digits)


def test_prepared_dataset_takes_no_lock(digits_data_dir, monkeypatch):
  """A prepared dataset loads from a data dir that may be read-only."""

  def refuse(*args):
    raise AssertionError(f'locked a prepared dataset: {args}')

  monkeypatch.setattr(preparing, 'exclusive', refuse)
  builder = pipelines.prepare_builder('sklearn_digits', digits_data_dir)
  assert builder.is_prepared()
  assert not os.path.exists(preparing.lock_path(digits_data_dir,
                                                'sklearn_digits'))


def test_default_data_dir_is_locked_too(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds.core.constants, 'DATA_DIR', str(tmp_path))
  locked = []
  exclusive = preparing.exclusive

  def recording(root, name):
    locked.append((root, name))
    return exclusive(root, name)

  monkeypatch.setattr(preparing, 'exclusive', recording)
  builder = pipelines.prepare_builder('sklearn_digits', None)
  assert builder.is_prepared()
  assert locked == [(str(tmp_path), 'sklearn_digits')]
  assert os.path.exists(preparing.lock_path(tmp_path, 'sklearn_digits'))


def test_unwritable_data_dir_says_so(tmp_path, monkeypatch):
  def read_only(root, name):
    raise OSError(30, 'Read-only file system',
                  preparing.lock_path(root, name))

  monkeypatch.setattr(preparing, 'exclusive', read_only)
  with pytest.raises(pipelines.DataNotPreparedError,
                     match='cannot be prepared there.*Read-only'):
    pipelines.prepare_builder('sklearn_digits', str(tmp_path))


def test_claims_on_non_local_dirs_wait_and_take_over(monkeypatch, capsys):
  """gs:// and the like have no OS locks: a claim file with an expiry."""
  monkeypatch.setattr(preparing, 'POLL_SECONDS', 0.02)
  root = f'ram://prepare-{os.getpid()}-{time.time_ns()}'
  path = preparing.claim_path(root, 'ds')
  events = []

  def second():
    with preparing._claimed(root, 'ds'):  # pylint: disable=protected-access
      events.append('second holds')

  with preparing.exclusive(root, 'ds'):
    assert tf.io.gfile.exists(path)
    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)
    events.append('first releases')
  thread.join(10)
  assert events == ['first releases', 'second holds']
  assert not tf.io.gfile.exists(path)
  assert capsys.readouterr().err.count('Waiting for another process '
                                       'preparing ds in ram://') == 1
  # A dead holder's claim (expired) is taken over at once: without waiting
  # for it (no "Waiting" line, which precedes the first poll).
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(b'{"owner": "dead", "expires": 1.0}')
  with preparing.exclusive(root, 'ds'):
    assert preparing._read_claim(path)[0] != 'dead'  # pylint: disable=protected-access
  assert 'Waiting' not in capsys.readouterr().err
  assert not tf.io.gfile.exists(path)
  # A claim no process of ours wrote (not JSON, too deep, wrong types) is
  # judged by its age, never a traceback: a fresh one is waited for.
  for junk in (b'[' * 100_000, b'{"owner": ["x"], "expires": "soon"}'):
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(junk)
    assert preparing._read_claim(path)[0] == 'unknown'  # pylint: disable=protected-access
