"""Tests for tf_memorization.data.arrays: datasets from .npz arrays.

Every .npz is written here with numpy; what `arrays` loads is checked
exactly against the arrays written (shapes, dtypes, ids, concatenation of
shards, normalization computed by hand), every kind of bad input against
the error naming its file (and key) or binding, and one of them through
the train binary's main (exit status 2, one `error:` line). The slow tests
train tiny.gin on arrays (8x8 images; scikit-learn's breast-cancer table
with models.mlp) and estimate memorization for the given ids.
"""

import csv
import os
import zipfile

import gin
import numpy as np
import pytest

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.data import arrays  # registers the `arrays` configurable
from tf_memorization.data import pipelines
from tf_memorization.estimation import pipeline as pipeline_lib
from tf_memorization import train
from tf_memorization.workdir import estimates

from conftest import GIN_DIR, run_in_process, train_tiny

TINY = os.path.join(GIN_DIR, 'tiny.gin')
# On top of tiny.gin, which binds a tfds name.
ARRAYS_BINDINGS = ["get_strategy.kind = 'one_device'",
                   'load_dataset.name = None', 'load_dataset.source = @arrays']


def _split(n, seed, shape=(4, 4), num_classes=3):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
          np.arange(n) % num_classes)


def _arrays(n_train=6, n_test=4, seed=0, **replace):
  """A small valid file's arrays, with some replaced (None: left out)."""
  x_train, y_train = _split(n_train, seed)
  x_test, y_test = _split(n_test, seed + 1)
  found = dict(x_train=x_train, y_train=y_train, x_test=x_test,
               y_test=y_test)
  found.update(replace)
  return {k: v for k, v in found.items() if v is not None}


def _write(path, **contents):
  np.savez(path, **contents)
  return str(path)


def _file(tmp_path, name='pipelines.npz', **replace):
  return _write(tmp_path / name, **_arrays(**replace))


# ------------------------------------------------------------ what is loaded


def test_images_load_as_uint8_with_a_channel_axis_and_default_ids(tmp_path):
  contents = _arrays()
  dataset = arrays.arrays(_write(tmp_path / 'a.npz', **contents))
  assert isinstance(dataset, pipelines.Dataset) and dataset.name == 'arrays'
  assert dataset.train.images.dtype == np.uint8
  assert dataset.train.images.shape == (6, 4, 4, 1)
  np.testing.assert_array_equal(dataset.train.images[..., 0],
                                contents['x_train'])
  np.testing.assert_array_equal(dataset.test.images[..., 0],
                                contents['x_test'])
  assert dataset.train.labels.dtype == np.int64
  np.testing.assert_array_equal(dataset.train.labels, contents['y_train'])
  np.testing.assert_array_equal(dataset.test.labels, contents['y_test'])
  assert dataset.train.ids.tolist() == [f'train/{i}' for i in range(6)]
  assert dataset.test.ids.tolist() == [f'test/{j}' for j in range(4)]
  assert dataset.num_classes == 3 and dataset.class_names is None
  assert not dataset.streaming
  assert dataset.describe()['image_shape'] == [4, 4, 1]
  assert len(dataset.version) == 12 and int(dataset.version, 16) >= 0


def test_colour_images_and_features_keep_their_shape(tmp_path):
  rng = np.random.default_rng(3)
  colour = arrays.arrays(_file(
      tmp_path, 'c.npz', x_train=rng.integers(0, 256, (6, 2, 3, 3), np.uint8),
      x_test=rng.integers(0, 256, (4, 2, 3, 3), np.uint8)))
  assert colour.image_shape == (2, 3, 3)
  assert colour.train.images.dtype == np.uint8
  x_train = rng.integers(-50, 50, (6, 5)).astype(np.int32)
  table = arrays.arrays(_file(tmp_path, 't.npz', x_train=x_train,
                              x_test=np.ones((4, 5), np.int16)))
  assert table.train.images.dtype == np.float32
  assert table.image_shape == (5,)
  np.testing.assert_array_equal(table.train.images, x_train)
  x_train = rng.normal(size=(6, 2, 3))
  grid = arrays.arrays(_file(tmp_path, 'g.npz', x_train=x_train,
                             x_test=rng.normal(size=(4, 2, 3)).astype('f2')))
  assert grid.train.images.dtype == grid.test.images.dtype == np.float32
  np.testing.assert_array_equal(grid.train.images, x_train.astype(np.float32))
  small = arrays.arrays(_file(tmp_path, 'u.npz', x_train=np.ones((6, 7),
                                                                 np.uint8),
                              x_test=np.ones((4, 7), np.uint8)))
  assert small.image_shape == (7,) and small.train.images.dtype == np.uint8


def test_given_ids_strings_integers_and_bytes(tmp_path):
  names = np.array([f'cat-{i:02d}' for i in range(6)])
  dataset = arrays.arrays(_file(
      tmp_path, ids_train=names, ids_test=np.array([40, 7, 1000, 3])))
  assert dataset.train.ids.tolist() == names.tolist()
  assert dataset.test.ids.tolist() == ['40', '7', '1000', '3']
  assert dataset.train.ids.dtype.kind == 'U'
  encoded = arrays.arrays(_file(tmp_path, 'b.npz',
                                ids_train=np.char.encode(names, 'utf-8')))
  assert encoded.train.ids.tolist() == names.tolist()
  assert encoded.test.ids.tolist() == [f'test/{j}' for j in range(4)]


def test_float_labels_holding_integers_and_the_bindings(tmp_path):
  path = _file(tmp_path, y_train=np.array([0., 1., 2., 0., 1., 2.]),
               y_test=np.array([2, 1, 0, 1], np.uint8),
               class_names=np.array(['a', 'b', 'c']))
  dataset = arrays.arrays(path)
  assert dataset.train.labels.dtype == np.int64
  assert dataset.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
  assert dataset.class_names == ('a', 'b', 'c')
  bound = arrays.arrays([path], num_classes=5, name='mine',
                        class_names=['v', 'w', 'x', 'y', 'z'])
  assert (bound.num_classes, bound.name) == (5, 'mine')
  assert bound.class_names == ('v', 'w', 'x', 'y', 'z')


def test_two_shards_concatenate_in_order(tmp_path):
  first, second = _arrays(seed=0), _arrays(n_train=3, n_test=2, seed=5)
  paths = [_write(tmp_path / 'shard0.npz', **first),
           _write(tmp_path / 'shard1.npz', **second)]
  dataset = arrays.arrays(paths)
  for split, n in (('train', 9), ('test', 6)):
    part = getattr(dataset, split)
    np.testing.assert_array_equal(part.images[..., 0], np.concatenate(
        [first[f'x_{split}'], second[f'x_{split}']]))
    np.testing.assert_array_equal(part.labels, np.concatenate(
        [first[f'y_{split}'], second[f'y_{split}']]))
    assert part.ids.tolist() == [f'{split}/{i}' for i in range(n)]
  whole = {k: np.concatenate([first[k], second[k]]) for k in first}
  # The same examples in one file are the same dataset.
  assert arrays.arrays(_write(tmp_path / 'whole.npz', **whole)).version == (
      dataset.version)
  with_ids = arrays.arrays([
      _write(tmp_path / 'i0.npz', ids_train=np.array(list('abcdef')),
             **first),
      _write(tmp_path / 'i1.npz', ids_train=np.array(list('xyz')),
             **second)])
  assert with_ids.train.ids.tolist() == list('abcdefxyz')


def test_normalization_per_channel_computed_by_hand(tmp_path):
  # Two 1x2 images with 2 channels: channel 0 holds 0, 10, 20, 30; channel
  # 1 is 7 everywhere (constant: its std is taken as 1).
  x_train = np.array([[[[0, 7], [10, 7]]], [[[20, 7], [30, 7]]]], np.uint8)
  dataset = arrays.arrays(_file(tmp_path, x_train=x_train, y_train=[0, 1],
                                x_test=x_train[:1], y_test=[1]))
  (mean, std) = dataset.normalization
  assert mean == pytest.approx((15.0, 7.0))
  assert std == pytest.approx((np.sqrt((225 + 25 + 25 + 225) / 4), 1.0))
  resolved_mean, resolved_std, augment = pipelines.Preprocessing().resolve(
      dataset.name, dataset.normalization)
  np.testing.assert_allclose(resolved_mean, mean)
  np.testing.assert_allclose(resolved_std, std)
  assert augment == 'none'
  images = np.random.default_rng(2).integers(0, 256, (6, 3, 2, 3), np.uint8)
  colour = arrays.arrays(_file(tmp_path, 'c.npz', x_train=images,
                               x_test=images[:4]))
  np.testing.assert_allclose(colour.normalization[0],
                             images.mean(axis=(0, 1, 2)), rtol=1e-12)
  np.testing.assert_allclose(colour.normalization[1],
                             images.std(axis=(0, 1, 2)), rtol=1e-12)
  features = np.random.default_rng(0).normal(3.0, 50.0, (6, 4))
  features[:, 2] = -4.0
  table = arrays.arrays(_file(tmp_path, 't.npz', x_train=features,
                              x_test=features[:4]))
  expected_std = features.astype(np.float32).std(axis=0, dtype=np.float64)
  expected_std[2] = 1.0
  np.testing.assert_allclose(table.normalization[0], features.astype(
      np.float32).mean(axis=0, dtype=np.float64), rtol=1e-12)
  np.testing.assert_allclose(table.normalization[1], expected_std,
                             rtol=1e-12)


def test_the_pipeline_standardizes_features(tmp_path):
  features = np.random.default_rng(1).normal(100.0, 20.0, (6, 3))
  dataset = arrays.arrays(_file(tmp_path, x_train=features,
                                x_test=features[:4]))
  pipeline = pipelines.InMemoryPipeline(dataset, pipelines.Preprocessing())
  x, y = next(iter(pipeline.evaluation('train', 6)))
  assert x.shape == (6, 3) and y.shape == (6, 3)
  np.testing.assert_allclose(x.numpy().mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.numpy().std(axis=0), 1.0, atol=1e-5)


def test_version_changes_with_any_value(tmp_path):
  contents = _arrays(ids_test=np.array(['p', 'q', 'r', 's']))
  version = arrays.arrays(_write(tmp_path / 'a.npz', **contents)).version
  assert arrays.arrays(_write(tmp_path / 'b.npz', **contents)).version == (
      version)
  changes = {'x_train': (0, 0, 0), 'x_test': (3, 2, 1), 'y_train': (4,),
             'y_test': (0,)}
  for key, index in changes.items():
    changed = {k: v.copy() for k, v in contents.items()}
    changed[key][index] = (changed[key][index] + 1) % 3
    other = arrays.arrays(_write(tmp_path / f'{key}.npz', **changed))
    assert other.version != version, key
  renamed = dict(contents, ids_test=np.array(['p', 'q', 'r', 't']))
  assert arrays.arrays(_write(tmp_path / 'ids.npz', **renamed)).version != (
      version)


def test_selected_through_gin(tmp_path):
  paths = [_file(tmp_path, 'a.npz'), _file(tmp_path, 'b.npz', seed=4)]
  gin.parse_config(['load_dataset.source = @arrays',
                    f'arrays.paths = {paths!r}', "arrays.name = 'shards'"])
  dataset = pipelines.load_dataset()
  assert dataset.name == 'shards' and len(dataset.train) == 12
  gin.clear_config()
  gin.parse_config(['load_dataset.source = @arrays',
                    f'arrays.paths = {paths[0]!r}'])
  assert len(pipelines.load_dataset().train) == 6
  # Where the files lie is no part of the fingerprint: the version is.
  assert not config.is_fingerprinted('arrays.paths')
  assert config.is_fingerprinted('arrays.num_classes')


# ------------------------------------------------------------- bad input


def _not_npz(tmp_path):
  path = tmp_path / 'bad.npz'
  path.write_bytes(b'these are not arrays')
  return str(path)


def _npy(tmp_path):
  path = tmp_path / 'single.npz'
  with open(path, 'wb') as f:
    np.save(f, np.zeros(3))
  return str(path)


def _truncated(tmp_path):
  path = _file(tmp_path, 'cut.npz')
  with open(path, 'rb') as f:
    payload = f.read()
  with open(path, 'wb') as f:
    f.write(payload[:len(payload) // 2])
  return path


def _corrupt_member(tmp_path):
  path = tmp_path / 'member.npz'
  with zipfile.ZipFile(path, 'w') as archive:
    for key in arrays.REQUIRED_KEYS:
      archive.writestr(f'{key}.npy', b'not an npy')
  return str(path)


def _fifo(tmp_path):
  path = tmp_path / 'pipe.npz'
  os.mkfifo(path)
  return str(path)


def _shards(tmp_path, second):
  return [_file(tmp_path, 's0.npz'), _file(tmp_path, 's1.npz', **second)]


NAN = np.ones((6, 3))
NAN[3, 1] = np.nan
INF = np.ones((4, 3), np.float32)
INF[2, 0] = -np.inf

# name -> (paths made in tmp_path, arrays() kwargs, error type, parts of the
# message), where '{F}' in a part stands for the (first) file.
C, U = errors.ConfigError, errors.UserError
BAD = {
    # The files themselves.
    'missing_file': (
        lambda t: str(t / 'none.npz'), {}, C,
        ['arrays.paths names {F}, which does not exist']),
    'folder': (lambda t: str(t), {}, C, ['arrays.paths names {F}, a folder']),
    'fifo': (_fifo, {}, C, ['arrays.paths names {F}, which is not a regular']),
    'not_npz': (_not_npz, {}, U, ['{F}: is not an .npz file', 'np.savez(']),
    'npy': (_npy, {}, U, ['{F}: is not an .npz file']),
    'truncated': (_truncated, {}, U, ['{F}: is not an .npz file']),
    'corrupt_member': (_corrupt_member, {}, U,
                       ['{F}: x_train is not a valid array']),
    'missing_key': (
        lambda t: _file(t, y_test=None), {}, U,
        ['{F}: lacks y_test (it holds x_test, x_train, y_train; needed: '
         'x_train, y_train, x_test, y_test, optional: ids_train']),
    'unknown_key': (lambda t: _file(t, labels=np.zeros(3)), {}, U,
                    ['{F}: holds unknown keys labels']),
    'object_array': (
        lambda t: _file(t, ids_train=np.array([1, 'a', None, 2, 3, 4],
                                              dtype=object)), {}, U,
        ['{F}: ids_train holds Python objects', 'allow_pickle=False']),
    # Lengths, shapes and kinds.
    'lengths': (lambda t: _file(t, y_train=np.arange(5) % 3), {}, U,
                ['{F}: x_train has 6 examples but y_train has 5']),
    'ids_length': (lambda t: _file(t, ids_test=np.arange(3)), {}, U,
                   ['{F}: x_test has 4 examples but ids_test has 3']),
    'one_dimensional_x': (lambda t: _file(t, x_test=np.arange(4)), {}, U,
                          ['{F}: x_test is int64 [4]', '[N, D] features']),
    'complex_features': (
        lambda t: _file(t, x_train=np.ones((6, 2), complex)), {}, U,
        ['{F}: x_train is complex128 [6, 2]']),
    'split_shapes': (
        lambda t: _file(t, x_test=np.zeros((4, 5, 4), np.uint8)), {}, U,
        ['x_train is uint8 [N, 4, 4, 1] but x_test is uint8 [N, 5, 4, 1]']),
    'split_dtypes': (
        lambda t: _file(t, x_test=np.zeros((4, 4, 4, 1))), {}, U,
        ['x_train is uint8 [N, 4, 4, 1] but x_test is float32 [N, 4, 4, 1]',
         'same example shape and dtype']),
    'empty_split': (
        lambda t: _file(t, x_test=np.zeros((0, 4, 4), np.uint8),
                        y_test=np.zeros(0, int)), {}, U,
        ['{F}: the test split is empty']),
    # Shards that disagree.
    'shard_shapes': (
        lambda t: _shards(t, {'x_train': np.zeros((6, 4, 5), np.uint8)}), {},
        U, ['s1.npz: x_train is uint8 [N, 4, 5] but in',
            's0.npz it is uint8 [N, 4, 4]', 'shards must agree']),
    'shard_dtypes': (
        lambda t: _shards(t, {'y_test': np.array([0., 1., 2., 0.])}), {}, U,
        ['s1.npz: y_test is float64 [N] but in', 'shards must agree']),
    'shard_keys': (
        lambda t: _shards(t, {'ids_train': np.arange(6)}), {}, U,
        ['s1.npz: holds ids_train, x_test', 'shards must hold the same keys']),
    'shard_class_names': (
        lambda t: [_file(t, 's0.npz', class_names=np.array(['a', 'b', 'c'])),
                   _file(t, 's1.npz', class_names=np.array(['a', 'b', 'd']))],
        {}, U, ['s1.npz: class_names differ from those of']),
    # Features.
    'nan_features': (
        lambda t: _file(t, x_train=NAN, x_test=np.ones((4, 3))), {}, U,
        ['{F}: x_train[3] holds nan', 'finite']),
    'inf_features': (
        lambda t: _file(t, x_train=np.ones((6, 3), np.float32), x_test=INF),
        {}, U, ['{F}: x_test[2] holds -inf']),
    'huge_features': (
        lambda t: _file(t, x_train=np.full((6, 2), 1e300),
                        x_test=np.ones((4, 2))), {}, U,
        ['{F}: x_train[0] holds 1e+300', 'beyond float32']),
    # Labels.
    'labels_outside': (
        lambda t: _file(t, y_test=np.array([0, 1, 7, 2])), {'num_classes': 5},
        U, ['{F}: y_test[2] = 7 is outside the classes [0, 5) '
            '(arrays.num_classes = 5)']),
    'negative_label': (
        lambda t: _file(t, y_train=np.array([0, 1, 2, -1, 0, 1])), {}, U,
        ['{F}: y_train[3] = -1 is outside the classes [0, 3)',
         'bind arrays.num_classes']),
    'huge_label': (lambda t: _file(t, y_test=np.array([0, 1, 2, 3e9])), {},
                   U, ['{F}: the largest label is 3000000000']),
    'fractional_label': (
        lambda t: _file(t, y_train=np.array([0, 0.5, 1, 2, 0, 1])), {}, U,
        ['{F}: y_train[1] = 0.5 is not an integer class index']),
    'nan_label': (
        lambda t: _file(t, y_test=np.array([0, 1, np.nan, 2])), {}, U,
        ['{F}: y_test[2] = nan is not an integer class index']),
    'string_labels': (
        lambda t: _file(t, y_train=np.array(list('abcabc'))), {}, U,
        ['{F}: y_train is <U1: labels must be integer class indices']),
    'one_hot_labels': (
        lambda t: _file(t, y_test=np.eye(4)), {}, U,
        ['{F}: y_test has shape [4, 4]', 'y_test.argmax(axis=1)']),
    'one_class': (
        lambda t: _file(t, y_train=np.zeros(6, int), y_test=np.zeros(4, int)),
        {}, U, ['{F}: every label is 0', 'bind arrays.num_classes']),
    'class_names_binding': (
        lambda t: _file(t), {'class_names': ['a', 'b']}, C,
        ['arrays.class_names has 2 names but there are 3 classes']),
    'class_names_key': (
        lambda t: _file(t, class_names=np.array(['a', 'b', 'c', 'd'])), {}, U,
        ['class_names of {F} has 4 names but there are 3 classes',
         'bind arrays.num_classes = 4']),
    # Ids.
    'duplicate_ids': (
        lambda t: _file(t, ids_train=np.array(list('abcdbe'))), {}, U,
        ["{F}: ids_train[4] = 'b', the same id as {F}: ids_train[1]",
         'unique within a split']),
    'duplicate_ids_across_shards': (
        lambda t: [_file(t, 's0.npz', ids_test=np.arange(4)),
                   _file(t, 's1.npz', ids_test=np.arange(3, 7))], {}, U,
        ["s1.npz: ids_test[0] = '3', the same id as", 's0.npz: ids_test[3]']),
    'empty_id': (
        lambda t: _file(t, ids_test=np.array(['a', '', 'b', 'c'])), {}, U,
        ['{F}: ids_test[1] is an empty id']),
    'bad_utf8_ids': (
        lambda t: _file(t, ids_test=np.array([b'a', b'\xff', b'c', b'd'])),
        {}, U, ['{F}: ids_test is not UTF-8 text']),
    'float_ids': (lambda t: _file(t, ids_test=np.arange(4.0)), {}, U,
                  ['{F}: ids_test is float64 [4]: ids must be 1-D strings']),
    # Bindings.
    'paths_empty': (lambda t: [], {}, C, ['arrays.paths must not be empty']),
    'paths_twice': (lambda t: [_file(t)] * 2, {}, C,
                    ['arrays.paths names {F} twice']),
    'paths_type': (lambda t: 3, {}, C, ['arrays.paths must be a list']),
    'num_classes': (lambda t: _file(t), {'num_classes': 1}, C,
                    ['arrays.num_classes must be >= 2']),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_input_names_the_file_or_binding(tmp_path, case):
  make, kwargs, kind, parts = BAD[case]
  paths = make(tmp_path)
  first = paths[0] if isinstance(paths, list) and paths else paths
  with pytest.raises(kind) as raised:
    arrays.arrays(paths, **kwargs)
  # One line, once cli drops gin's note of the call.
  message = str(raised.value).split('\n  In call to configurable')[0]
  assert '\n' not in message
  for part in parts:
    assert part.replace('{F}', str(first)) in message, message
  assert isinstance(raised.value, errors.USER_ERRORS)


def test_unbound_paths_say_how_to_bind():
  gin.parse_config(['load_dataset.source = @arrays'])
  with pytest.raises(errors.ConfigError, match='arrays.paths is not bound'):
    pipelines.load_dataset()


def test_train_binary_exits_2_with_one_error_line(tmp_path):
  path = _file(tmp_path, y_train=np.array([0, 1, 2, 0, 1, 9]))
  workdir = tmp_path / 'w'
  status, out, err = run_in_process(lambda: train.run(
      str(workdir), [TINY], ARRAYS_BINDINGS + [f'arrays.paths = {path!r}',
                                               'arrays.num_classes = 3'],
      data_dir=None, log=lambda _: None))
  assert status == 2, err
  assert 'Traceback' not in err
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert lines == [f'error: {path}: y_train[5] = 9 is outside the classes '
                   '[0, 3) (arrays.num_classes = 3): relabel to 0..K-1, or '
                   'bind arrays.num_classes to the number of classes.'], err
  assert 'error:' not in out
  assert not workdir.exists()


# ------------------------------------------------------------- end to end


def _memorization_rows(workdir):
  path = os.path.join(estimates.estimates_dir(workdir),
                      estimates.MEMORIZATION_CSV)
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_images_train_and_estimate(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.arange(52) % 4
  # Each class a bright quadrant on noise: learnable in a few steps.
  images = rng.integers(0, 60, (52, 8, 8), dtype=np.uint8)
  for i, label in enumerate(labels):
    r, c = divmod(int(label), 2)
    images[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 150
  ids = np.array([f'img-{i:03d}' for i in range(40)])
  path = _write(tmp_path / 'tiny.npz', x_train=images[:40],
                y_train=labels[:40], x_test=images[40:], y_test=labels[40:],
                ids_train=ids, class_names=np.array(['nw', 'ne', 'sw', 'se']))
  workdir = str(tmp_path / 'w')
  summary = train_tiny(workdir, ARRAYS_BINDINGS + [
      f'arrays.paths = {path!r}', 'TrialTrainer.batch_size = 8',
      'TrialTrainer.epochs = 10'], data_dir=None)
  assert summary.trained == [0, 1, 2, 3]
  result = pipeline_lib.run(workdir, gin_bindings=['Estimator.report = False'],
                            log=lambda _: None)
  rows = _memorization_rows(workdir)
  assert [row['id'] for row in rows] == ids.tolist()
  assert [int(row['index']) for row in rows] == list(range(40))
  assert [int(row['label']) for row in rows] == labels[:40].tolist()
  assert all(int(row['k_in']) == 2 and int(row['k_out']) == 2
             for row in rows)
  assert result['mean_test_accuracy'] > 0.5  # chance: 0.25


@pytest.mark.slow
def test_tabular_breast_cancer_with_mlp(tmp_path):
  sklearn_datasets = pytest.importorskip('sklearn.datasets')
  table = sklearn_datasets.load_breast_cancer()
  order = np.random.default_rng(0).permutation(len(table.target))
  train_rows, test_rows = order[:400], order[400:]
  path = _write(tmp_path / 'cancer.npz', x_train=table.data[train_rows],
                y_train=table.target[train_rows],
                x_test=table.data[test_rows], y_test=table.target[test_rows],
                ids_train=train_rows, ids_test=test_rows,
                class_names=np.array(table.target_names))
  dataset = arrays.arrays(path)
  assert dataset.image_shape == (30,) and dataset.num_classes == 2
  workdir = str(tmp_path / 'w')
  summary = train_tiny(workdir, ARRAYS_BINDINGS + [
      f'arrays.paths = {path!r}', 'TrialTrainer.model_fn = @mlp',
      'mlp.widths = (32,)', 'TrialTrainer.epochs = 10'], data_dir=None)
  assert summary.trained == [0, 1, 2, 3]
  result = pipeline_lib.run(workdir, gin_bindings=['Estimator.report = False'],
                            log=lambda _: None)
  assert result['mean_test_accuracy'] > 0.85, result['mean_test_accuracy']
  rows = _memorization_rows(workdir)
  assert [row['id'] for row in rows] == [str(i) for i in train_rows]
  assert [int(row['label']) for row in rows] == (
      table.target[train_rows].tolist())
