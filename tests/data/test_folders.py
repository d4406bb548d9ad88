"""Tests for tf_memorization.data.folders: an image folder as a dataset.

The folders are written here with PIL: a few classes of tiny images, PNG and
JPEG mixed, some grayscale. PNGs decode to exactly the pixels written, so the
expectations are those arrays.
"""

import csv
import json
import os
import re
import threading

import gin
import numpy as np
from PIL import Image
import pytest

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.data import folders  # registers @image_folder
from tf_memorization.data import pipelines
from tf_memorization.estimation import pipeline as pipeline_lib
from tf_memorization import train

from conftest import GIN_DIR, error_line, run_in_process, train_tiny

CLASSES = ('cat', 'dog', 'fox')
NONE = pipelines.Preprocessing(augment='none')
CROP_FLIP = pipelines.Preprocessing(augment='crop_flip')


def write_image(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def make_folder(root, classes=CLASSES, per_class=12, shape=(8, 8), seed=0,
                png_only=False, prefix=''):
  """Writes root/<prefix><class>/... images; {id: pixels} of the PNGs.

  Image k of a class is a JPEG when k % 3 == 0 (unless png_only), grayscale
  when k % 4 == 1, in a nested folder when k == 5, and named .PNG when k == 7.
  """
  rng = np.random.default_rng(seed)
  pngs = {}
  for name in classes:
    for k in range(per_class):
      gray = k % 4 == 1
      pixels = rng.integers(0, 256, shape if gray else shape + (3,),
                            dtype=np.uint8)
      ext = '.jpg' if k % 3 == 0 and not png_only else '.png'
      ext = '.PNG' if k == 7 else ext
      example_id = (f'{prefix}{name}/' + ('nested/deeper/' if k == 5 else '')
                    + f'{seed}_{k:03d}{ext}')
      write_image(os.path.join(root, example_id), pixels)
      if ext != '.jpg':
        pngs[example_id] = (np.repeat(pixels[..., None], 3, axis=-1)
                            if gray else pixels)
  return pngs


@pytest.fixture(name='flat')
def flat_folder(tmp_path):
  """3 classes x 12 mixed images, plus files and folders that are ignored."""
  root = str(tmp_path / 'pets')
  pngs = make_folder(root)
  for ignored in ('cat/.hidden.png', '.cache/cat/x.png', 'dog/.thumbs/y.png',
                  'loose.png'):  # hidden, or outside a class folder
    write_image(os.path.join(root, ignored), np.zeros((8, 8, 3), np.uint8))
  with open(os.path.join(root, 'cat', 'notes.txt'), 'w') as f:
    f.write('not an image')
  return root, pngs


def images(root):
  """The ids image_folder should find: images in non-hidden class folders."""
  found = []
  for path, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    found += [os.path.relpath(os.path.join(path, f), root)
              for f in names if not f.startswith('.')
              and f.lower().endswith(('.png', '.jpg'))]
  return sorted(i for i in found if '/' in i)


def test_hash_split_ids_labels_and_pixels(flat):
  root, pngs = flat
  dataset = folders.image_folder(root)
  assert dataset.name == 'image_folder' and dataset.num_classes == 3
  assert dataset.class_names == CLASSES
  assert len(dataset.version) == 12 and int(dataset.version, 16) >= 0
  everything = images(root)
  assert len(everything) == 36
  ids = list(dataset.train.ids) + list(dataset.test.ids)
  assert sorted(ids) == everything
  for part in (dataset.train, dataset.test):
    assert list(part.ids) == sorted(part.ids)
    assert part.ids.dtype.kind == 'U' and part.files is None
    np.testing.assert_array_equal(
        part.labels, [CLASSES.index(i.split('/')[0]) for i in part.ids])
  test = {i for i in everything if folders.hash_fraction(i) < 0.2}
  assert set(dataset.test.ids) == test and 0 < len(test) < 36
  assert 'cat/nested/deeper/0_005.png' in ids and 'cat/0_007.PNG' in ids
  assert dataset.train.images.shape == (len(dataset.train), 8, 8, 3)
  for part in (dataset.train, dataset.test):
    for k, example_id in enumerate(part.ids):
      if example_id in pngs:
        np.testing.assert_array_equal(part.images[k], pngs[example_id])
  mean, std = dataset.normalization
  pixels = dataset.train.images.reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-9)
  np.testing.assert_allclose(std, pixels.std(0), rtol=1e-6)


def test_hash_split_is_stable_when_files_are_added(flat):
  root, _ = flat
  before = folders.image_folder(root, test_fraction=0.3)
  make_folder(root, per_class=4, seed=1)  # 12 new files, 4 per class
  after = folders.image_folder(root, test_fraction=0.3)
  assert len(after.train) + len(after.test) == 36 + 12
  assert set(before.test.ids) <= set(after.test.ids)
  assert set(before.train.ids) <= set(after.train.ids)
  assert after.version != before.version
  assert folders.image_folder(root, test_fraction=0.3).version == (
      after.version)


def test_auto_uses_train_and_test_folders(tmp_path):
  root = str(tmp_path / 'split')
  make_folder(root, per_class=4, prefix='train/')
  make_folder(root, classes=('dog', 'cat'), per_class=2, seed=1,
              prefix='test/')
  for split in ('auto', 'folders'):
    dataset = folders.image_folder(root, split=split)
    assert dataset.class_names == CLASSES
    assert all(i.startswith('train/') for i in dataset.train.ids)
    assert list(dataset.test.ids) == sorted(
        f'test/{c}/1_{k:03d}.{"jpg" if k == 0 else "png"}'
        for c in ('cat', 'dog') for k in range(2))
    np.testing.assert_array_equal(dataset.test.labels, [0, 0, 1, 1])
    assert len(dataset.train) == 12
  # 'hash' looks at root's sub-folders as classes: train and test.
  assert folders.image_folder(root, split='hash').class_names == (
      'test', 'train')


def test_test_list(flat, tmp_path):
  root, _ = flat
  listing = tmp_path / 'test.txt'
  listing.write_text('# the held-out images\n\ncat/0_001.png\n'
                     './dog/nested/deeper/0_005.png\n  fox/0_000.jpg  \n'
                     'cat/0_001.png\n')
  dataset = folders.image_folder(root, test_list=str(listing))
  assert list(dataset.test.ids) == ['cat/0_001.png',
                                    'dog/nested/deeper/0_005.png',
                                    'fox/0_000.jpg']
  np.testing.assert_array_equal(dataset.test.labels, [0, 1, 2])
  assert len(dataset.train) == 33 and 'cat/0_001.png' not in dataset.train.ids


def test_streaming_evaluation_and_images_match_in_memory(tmp_path):
  root = str(tmp_path / 'pngs')
  pngs = make_folder(root, png_only=True)
  memory = folders.image_folder(root)
  streaming = folders.image_folder(root, streaming=True)
  assert streaming.streaming and not memory.streaming
  assert streaming.train.images is None
  assert streaming.image_shape == memory.image_shape == (8, 8, 3)
  assert streaming.describe() == memory.describe()
  np.testing.assert_allclose(streaming.normalization, memory.normalization)
  assert streaming.train.files[0] == os.path.join(root, memory.train.ids[0])
  np.testing.assert_array_equal(streaming.train.ids, memory.train.ids)
  first = pipelines.make_pipeline(memory, CROP_FLIP)
  second = pipelines.make_pipeline(streaming, CROP_FLIP)
  assert isinstance(second, folders.FolderPipeline)
  assert second.image_shape == (8, 8, 3)
  for split in ('train', 'test'):
    a = list(first.evaluation(split, 5).as_numpy_iterator())
    b = list(second.evaluation(split, 5).as_numpy_iterator())
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
      np.testing.assert_array_equal(xa, xb)
      np.testing.assert_array_equal(ya, yb)
  shown = streaming.images_of('test', [0, 2])
  assert sorted(shown) == [0, 2]
  np.testing.assert_array_equal(shown[2], pngs[streaming.test.ids[2]])


def test_streaming_train_reads_the_subset_and_is_deterministic(flat):
  root, _ = flat
  memory = folders.image_folder(root)
  streaming = folders.image_folder(root, streaming=True)
  subset = np.arange(0, len(memory.train), 3)
  pipeline = pipelines.make_pipeline(streaming, NONE)
  mean, std = pipeline.mean, pipeline.std
  index_of = {img.tobytes(): i for i, img in enumerate(memory.train.images)}

  def take(p, seed, num=5):
    return list(p.train(subset, 4, seed).take(num).as_numpy_iterator())

  batches = take(pipeline, 7)
  seen = []
  for x, y in batches:
    assert x.shape == (4, 8, 8, 3) and x.dtype == np.float32
    for image, one_hot in zip(x, y):
      pixels = np.round(image * std + mean).astype(np.uint8)
      k = index_of[pixels.tobytes()]
      assert memory.train.labels[k] == np.argmax(one_hot)
      seen.append(k)
  assert set(seen) <= set(subset)
  assert sorted(seen[:len(subset)]) == list(subset)  # one pass, all of it
  again = take(pipeline, 7)
  other = take(pipeline, 8)
  for (xa, _), (xb, _) in zip(batches, again):
    np.testing.assert_array_equal(xa, xb)
  assert not all(np.array_equal(a[0], b[0]) for a, b in zip(batches, other))
  # With augmentation, the very batches the in-memory pipeline computes.
  augmented = take(pipelines.make_pipeline(streaming, CROP_FLIP), 7)
  reference = take(pipelines.InMemoryPipeline(memory, CROP_FLIP), 7)
  for (xa, ya), (xb, yb) in zip(augmented, reference):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_resize_and_channels(tmp_path):
  root = str(tmp_path / 'sizes')
  make_folder(root, classes=('a', 'b'), per_class=4, shape=(8, 8))
  wide = os.path.join(root, 'b', 'wide.png')
  write_image(wide, np.full((6, 10, 3), 200, np.uint8))
  listing = tmp_path / 'test.txt'
  listing.write_text('a/0_000.jpg\nb/wide.png\n')
  with pytest.raises(errors.ConfigError, match='image_folder.image_size') as e:
    folders.image_folder(root, test_list=str(listing))
  assert f'{root}/a/0_001.png is 8x8 pixels but {wide} is 6x10' in str(
      e.value)
  for streaming in (False, True):
    square = folders.image_folder(root, image_size=4, streaming=streaming,
                                  test_list=str(listing))
    assert square.image_shape == (4, 4, 3)
    shown = square.images_of('test', [0, 1])
    assert shown[0].shape == (4, 4, 3)
    assert (shown[1] == 200).all()  # a constant image stays constant
    gray = folders.image_folder(root, image_size=[5, 7], channels=1,
                                streaming=streaming, test_list=str(listing))
    assert gray.image_shape == (5, 7, 1)
    shown = gray.images_of('train', range(len(gray.train)))
    assert {v.shape for v in shown.values()} == {(5, 7, 1)}
    assert len(shown) == 7


def test_grayscale_decodes_to_one_channel(tmp_path):
  root = str(tmp_path / 'gray')
  rng = np.random.default_rng(3)
  written = {}
  for k, ext in enumerate(('.png', '.bmp', '.gif', '.jpg') * 2):
    pixels = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    example_id = f'{"ab"[k % 2]}/{k}{ext}'
    write_image(os.path.join(root, example_id), pixels)
    written[example_id] = pixels
  listing = tmp_path / 'test.txt'
  listing.write_text('a/0.png\nb/1.bmp\n')
  for streaming in (False, True):
    dataset = folders.image_folder(root, test_list=str(listing), channels=1,
                                   streaming=streaming)
    assert dataset.image_shape == (6, 6, 1)
    for split, part in (('train', dataset.train), ('test', dataset.test)):
      got = dataset.images_of(split, range(len(part)))
      for k, example_id in enumerate(part.ids):
        if not example_id.endswith('.jpg'):  # lossless: the pixels written
          np.testing.assert_array_equal(got[k][..., 0], written[example_id],
                                        example_id)
  # A GIF is a palette image: a folder with one decodes to RGB by default.
  assert folders.image_folder(root, test_list=str(listing)).image_shape == (
      6, 6, 3)
  for gif in [i for i in written if i.endswith('.gif')]:
    os.remove(os.path.join(root, gif))
  assert folders.image_folder(root, test_list=str(listing)).image_shape == (
      6, 6, 1)
  color = folders.image_folder(root, channels=3, test_list=str(listing))
  assert color.image_shape == (6, 6, 3)
  np.testing.assert_array_equal(color.test.images[0],
                                np.repeat(written['a/0.png'][..., None], 3, -1))


def test_gin_source(flat):
  root, _ = flat
  gin.parse_config(['load_dataset.source = @image_folder',
                    f'image_folder.root = {root!r}',
                    "image_folder.name = 'pets'"])
  dataset = pipelines.load_dataset()
  assert dataset.name == 'pets' and dataset.class_names == CLASSES


def _corrupt(root, name, contents):
  with open(os.path.join(root, name), 'wb') as f:
    f.write(contents)
  return os.path.join(root, name)


def test_bad_input(flat, tmp_path):
  root, _ = flat

  def fails(match, error=errors.UserError, **kwargs):
    with pytest.raises(error) as e:
      folders.image_folder(**kwargs)
    message = str(e.value).split('\n  In call to configurable')[0]
    assert '\n' not in message
    assert match in message, message
    assert isinstance(e.value, errors.USER_ERRORS)
    return message

  fails('image_folder.root', errors.ConfigError)
  missing = str(tmp_path / 'nowhere')
  fails(f'image_folder.root: {missing} is not a folder', errors.ConfigError,
        root=missing)
  fails('it is a file', errors.ConfigError,
        root=os.path.join(root, 'cat', 'notes.txt'))
  empty = tmp_path / 'empty'
  (empty / 'cat').mkdir(parents=True)
  (empty / 'cat' / 'readme.txt').write_text('x')
  message = fails(f'{empty} holds no images', root=str(empty))
  assert '.bmp .gif .jpeg .jpg .png' in message
  for key, value in (('test_fraction', 0), ('test_fraction', 1.0),
                     ('test_fraction', '0.2'), ('channels', 2),
                     ('channels', True), ('image_size', 0),
                     ('image_size', (0, 4)), ('image_size', (1, 2, 3)),
                     ('image_size', 'big'), ('split', 'random'),
                     ('streaming', 'yes'), ('test_list', '')):
    fails(f'image_folder.{key}', errors.ConfigError, root=root,
          **{key: value})
  fails("bind one of them", errors.ConfigError, root=root, split='folders',
        test_list='x.txt')
  fails(f'{root}/train is not a folder', errors.ConfigError, root=root,
        split='folders')
  fails('image_folder.test_list: ', errors.ConfigError, root=root,
        test_list=str(tmp_path / 'missing.txt'))
  listing = tmp_path / 'bad.txt'
  listing.write_text('# test\ncat/0_001.png\ncat/gone.png\n')
  fails(f"{listing}:3: 'cat/gone.png' is not an image of {root}",
        errors.ConfigError, root=root, test_list=str(listing))
  listing.write_text('# nothing\n')
  fails('lists no images', errors.ConfigError, root=root,
        test_list=str(listing))
  listing.write_text('\n'.join(i for i in images(root) if i.startswith('fox')))
  fails("Class 'fox'", root=root, test_list=str(listing))
  os.makedirs(os.path.join(root, 'owl', 'empty'))
  fails(f'Class folder {root}/owl holds no images', root=root)
  os.rmdir(os.path.join(root, 'owl', 'empty'))
  os.rmdir(os.path.join(root, 'owl'))
  fails('No image of', root=root, test_fraction=1e-9)

  split = tmp_path / 'split'
  make_folder(str(split), classes=('cat',), per_class=2, prefix='train/')
  make_folder(str(split), classes=('owl',), per_class=2, prefix='test/')
  fails(f'{split}/test/owl is a class with no folder in {split}/train',
        root=str(split))
  for streaming in (False, True):
    bad = _corrupt(root, 'cat/broken.png', b'not a png at all')
    message = fails(bad, root=root, streaming=streaming)
    assert 'delete or repair it' in message
    os.remove(bad)
  tiff = os.path.join(root, 'dog', 'scan.png')
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiff, format='TIFF')
  fails(f'{tiff} is a TIFF file', root=root)
  os.remove(tiff)
  # A header that reads, pixels that do not: found when decoding.
  with open(os.path.join(root, 'fox', '0_001.png'), 'rb') as f:
    header = f.read()[:60]
  bad = _corrupt(root, 'fox/truncated.png', header)
  message = fails(bad, root=root)
  assert 'cannot be decoded' in message and 'delete or repair it' in message


def _train_error(workdir, root, *bindings, **kwargs):
  """The one error line of the train binary (in process) on folder
  `root`."""
  return error_line(*run_in_process(lambda: train.run(
      workdir, [os.path.join(GIN_DIR, 'tiny.gin')],
      ['load_dataset.name = None', 'load_dataset.source = @image_folder',
       f'image_folder.root = {root!r}', *bindings], log=lambda _: None,
      **kwargs)))


def test_train_binary_exits_2_naming_a_bad_folder(tmp_path):
  missing = str(tmp_path / 'no_pets')
  line = _train_error(str(tmp_path / 'w'), missing)
  assert f'image_folder.root: {missing} is not a folder' in line
  assert not os.path.exists(tmp_path / 'w')


def test_one_class_is_refused(tmp_path):
  """Trained, a one-class folder gives memorization 0 and AUC 0.5 for all."""
  root = str(tmp_path / 'cats')
  make_folder(root, classes=('cat',), per_class=6)
  line = _train_error(str(tmp_path / 'w'), root)
  assert f"{root} holds one class folder ('cat')" in line
  assert 'a classifier needs at least two class sub-folders in' in line
  assert not os.path.exists(tmp_path / 'w')
  split = str(tmp_path / 'split')
  make_folder(split, classes=('cat',), per_class=4, prefix='train/')
  make_folder(split, classes=('cat',), per_class=2, seed=1, prefix='test/')
  with pytest.raises(errors.UserError, match=f'{split}/train holds one class'):
    folders.image_folder(split)


def _break_pixels(path, size=None):
  """Keeps an image's header (it still opens) but not its pixels (it does
  not decode): its first 60 bytes, zero-padded to `size` (default: as many
  bytes as it had). Returns its (size, mtime_ns) before."""
  info = os.stat(path)
  with open(path, 'rb') as f:
    header = f.read(60)
  size = info.st_size if size is None else size
  with open(path, 'wb') as f:
    f.write(header + bytes(max(size - len(header), 0)))
  return info.st_size, info.st_mtime_ns


def _names(path, reason='('):
  """A regex of an error naming `path` among the images that do not decode."""
  return re.escape(f'cannot be decoded: {path} {reason}')


def _checks(data_dir):
  """(path, parsed contents) of the one file image_folder records its checks
  in, under the tfds data dir."""
  found = [os.path.join(path, f) for path, _, files in os.walk(data_dir)
           for f in files]
  assert len(found) == 1, found
  with open(found[0]) as f:
    return found[0], json.load(f)


@pytest.mark.slow
def test_streaming_folder_checks_every_image_before_training(
    tmp_path, monkeypatch):
  """One image of 700 does not decode, outside the normalization sample."""
  data_dir = str(tmp_path / 'tfds')
  monkeypatch.setenv('TFDS_DATA_DIR', data_dir)
  root = str(tmp_path / 'many')
  make_folder(root, classes=('cat', 'dog'), per_class=350, png_only=True)
  everything = images(root)
  train_ids = [i for i in everything if folders.hash_fraction(i) >= 0.2]
  test_ids = [i for i in everything if folders.hash_fraction(i) < 0.2]
  sample = np.random.default_rng(0).choice(  # as image_folder draws it
      len(train_ids), folders.NORMALIZATION_SAMPLE, replace=False)
  broken = os.path.join(root, train_ids[min(
      set(range(len(train_ids))) - set(sample))])
  _break_pixels(broken)
  workdir = str(tmp_path / 'w')
  line = _train_error(workdir, root, 'image_folder.streaming = True',
                      'TrialTrainer.epochs = 1',
                      "get_strategy.kind = 'one_device'", trials='0:1')
  assert line.startswith(f'error: 1 of the 700 images of {root} cannot be '
                         f'decoded: {broken} (Invalid PNG data')
  assert 'delete or repair it, or move it out of the folder' in line
  assert not os.path.exists(workdir)  # nothing trained
  # Every image that decoded is remembered by (id, size, mtime_ns).
  path, checks = _checks(data_dir)
  assert checks['root'] == root
  assert checks['decoded'] == {
      i: [os.stat(os.path.join(root, i)).st_size,
          os.stat(os.path.join(root, i)).st_mtime_ns]
      for i in everything if os.path.join(root, i) != broken}
  os.remove(broken)
  dataset = folders.image_folder(root, streaming=True)
  assert len(dataset.train) == len(train_ids) - 1
  # The next check decodes only what changed: a test image broken with its
  # size and mtime kept is not decoded again (the record serves it)...
  changed = os.path.join(root, test_ids[0])
  size, mtime_ns = _break_pixels(changed)
  os.utime(changed, ns=(mtime_ns, mtime_ns))
  folders.image_folder(root, streaming=True)
  with open(path, 'rb') as f:
    record = f.read()
  assert json.loads(record)['decoded'][test_ids[0]] == [size, mtime_ns]
  # ...while a new mtime, or a new size, has it decoded again.
  for new_size, new_mtime_ns in ((size, mtime_ns + 10**9),
                                 (size + 1, mtime_ns)):
    with open(path, 'wb') as f:
      f.write(record)
    _break_pixels(changed, new_size)
    os.utime(changed, ns=(mtime_ns, new_mtime_ns))
    with pytest.raises(errors.UserError, match=_names(changed)) as e:
      folders.image_folder(root, streaming=True)
    assert 'Invalid PNG data' in str(e.value)
    assert test_ids[0] not in _checks(data_dir)[1]['decoded']
  # In memory, decoding every file is the check: a failure is never
  # explained away by the record.
  with open(path, 'wb') as f:
    f.write(record)
  _break_pixels(changed, size)
  os.utime(changed, ns=(mtime_ns, mtime_ns))
  with pytest.raises(errors.UserError, match=_names(changed)):
    folders.image_folder(root)
  assert _checks(data_dir)[0] == path


def test_unreadable_images_are_listed_in_one_error(flat, tmp_path,
                                                   monkeypatch):
  root, _ = flat
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  bad = [_corrupt(root, f'dog/{k}_broken.png', b'not a png') for k in range(3)]
  for k in (1, 2, 4, 8):  # PNGs of make_folder
    bad.append(os.path.join(root, 'fox', f'0_{k:03d}.png'))
    _break_pixels(bad[-1])
  bad.sort()
  for streaming in (False, True):
    with pytest.raises(errors.UserError) as e:
      folders.image_folder(root, streaming=streaming)
    message = str(e.value).split('\n  In call to configurable')[0]
    assert '\n' not in message
    assert message.startswith(f'7 of the 39 images of {root} cannot be '
                              f'decoded: {bad[0]} (')
    assert all(path in message for path in bad[:5])
    assert not any(path in message for path in bad[5:])
    assert '; and 2 more. ' in message
    assert 'delete or repair them, or move them out of the folder' in message


def test_a_fifo_is_refused_unopened(flat):
  """Opening a FIFO for reading would wait for a writer forever."""
  root, _ = flat
  fifo = os.path.join(root, 'cat', 'pipe.png')
  os.mkfifo(fifo)
  done = threading.Event()

  def unblock():  # a reader stuck in open() gets EOF: a failure, not a hang
    while not done.wait(0.1):
      try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
      except OSError:  # no reader
        pass

  thread = threading.Thread(target=unblock, daemon=True)
  thread.start()
  try:
    for streaming in (False, True):
      with pytest.raises(errors.UserError,
                         match=_names(fifo, '(not a regular file)')):
        folders.image_folder(root, streaming=streaming)
  finally:
    done.set()
    thread.join()


def test_checks_file_is_untrusted(tmp_path, monkeypatch):
  """A corrupt, oversized or foreign record of the checks is rebuilt."""
  data_dir = str(tmp_path / 'tfds')
  monkeypatch.setenv('TFDS_DATA_DIR', data_dir)
  root = str(tmp_path / 'pets')
  make_folder(root, per_class=4)
  folders.image_folder(root, streaming=True)
  path, good = _checks(data_dir)
  broken = os.path.join(root, 'cat', '0_001.png')
  size, mtime_ns = _break_pixels(broken)
  os.utime(broken, ns=(mtime_ns, mtime_ns))
  entry = 'cat/0_001.png'
  other = str(tmp_path / 'other')
  for payload in (b'{"truncated', b'\xff\xfe not json', b'[' * 100_000,
                  json.dumps(dict(good, root=other)).encode(),
                  json.dumps(dict(good, tensorflow='0.0')).encode(),
                  json.dumps(good).encode() + b' ' * 10**6):
    with open(path, 'wb') as f:
      f.write(payload)
    with pytest.raises(errors.UserError, match=_names(broken)):
      folders.image_folder(root, streaming=True)
    _, rebuilt = _checks(data_dir)
    assert rebuilt['root'] == root and entry not in rebuilt['decoded']
    assert len(rebuilt['decoded']) == len(good['decoded']) - 1
  # Entries are taken only as written: ints, equal to the file's own.
  for recorded in ([float(size), mtime_ns], [str(size), mtime_ns],
                   [size, mtime_ns, 0], {'size': size}, [True, mtime_ns]):
    with open(path, 'w') as f:
      json.dump(dict(good, decoded=dict(good['decoded'],
                                        **{entry: recorded})), f)
    with pytest.raises(errors.UserError, match=_names(broken)):
      folders.image_folder(root, streaming=True)
  # Where it cannot be written, that is no error (the next run decodes all).
  os.remove(path)
  os.rmdir(os.path.dirname(path))
  with open(os.path.dirname(path), 'w') as f:
    f.write('a file where the folder would be')
  os.remove(broken)
  assert len(folders.image_folder(root, streaming=True).train) > 0


@pytest.mark.slow
def test_train_and_estimate_on_a_folder(tmp_path):
  """In memory and streaming: the same trials, scores joined to the files."""
  rng = np.random.default_rng(0)
  roots = [str(tmp_path / 'pets'), str(tmp_path / 'moved')]
  for label, name in enumerate(CLASSES):  # learnable: one colour per class
    for k in range(12):
      pixels = rng.integers(0, 60, (8, 8, 3)) + 40
      pixels[..., label] += 150
      for root in roots:
        write_image(os.path.join(root, name, f'{k:02d}.png'),
                    pixels.astype(np.uint8))
  dataset = folders.image_folder(roots[0])
  tables, fingerprints = [], []
  for streaming, root in zip((False, True), roots):
    workdir = str(tmp_path / f'w_{streaming}')
    summary = train_tiny(workdir, [
        'load_dataset.name = None', 'load_dataset.source = @image_folder',
        f'image_folder.root = {root!r}',
        f'image_folder.streaming = {streaming}',
        'SubsetDesign.num_trials = 4', 'TrialTrainer.epochs = 3',
        'TrialTrainer.batch_size = 8', "get_strategy.kind = 'one_device'"],
        data_dir=None)
    assert summary.trained == [0, 1, 2, 3]
    fingerprints.append(summary.fingerprint)
    with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
      text = f.read()
    assert 'image_folder.root =' in text and repr(root) in text
    pipeline_lib.run(workdir, gin_bindings=['Estimator.report = False'],
                     log=lambda _: None)
    gin.clear_config()
    path = os.path.join(workdir, 'estimates', 'memorization.csv')
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
    assert [r['id'] for r in rows] == list(dataset.train.ids)
    assert [int(r['label']) for r in rows] == list(dataset.train.labels)
    assert all(os.path.isfile(os.path.join(root, r['id'])) for r in rows)
    tables.append(rows)
  # Neither the folder's place nor streaming changes what a trial computes.
  assert fingerprints[0] == fingerprints[1]
  np.testing.assert_allclose(
      [float(r['memorization']) for r in tables[0]],
      [float(r['memorization']) for r in tables[1]], atol=1e-5)
