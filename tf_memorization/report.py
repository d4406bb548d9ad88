r"""A self-contained HTML report of a workdir's estimates: W/report/index.html.

    python -m tf_memorization.report --workdir=W [--output_dir=DIR]
        [--data_dir=/data/tfds]

The estimate binary builds it at the end of its run (gin `Estimator.report`,
default True; `Estimator.report_dir`, default W/report). Built on its own, it
reads what the estimate binary wrote (W/estimates/summary.json,
memorization.csv, influence_pairs.csv, influence_topk.npz, the experiments'
tables and plots), W/dataset.npz (labels before and after label noise) and
W/operative_config.gin, whose `load_dataset` bindings say where the images
are: in-memory datasets are read whole and indexed; streaming ones (ImageNet)
read only the examples shown, chosen by tfds id, as 64x64 thumbnails.

The folder holds index.html (CSS inline, no scripts, nothing fetched from the
network) and the PNGs it shows; every link is a relative path inside it, so
the folder can be copied or archived as is. Sections of experiments that did
not run are listed at the end with the binding that enables them.

A workdir may be shared or come from someone else, so everything read from it
is untrusted: every value reaches the page as escaped text (a string where a
number belongs is shown as that string), every image is one of this module's
own file names, and a value the report cannot use (a list where an object
belongs, a CSV cell that is no number, an index out of range) is one UserError
naming the file, before anything of the report is written.
"""

import array
import csv
import dataclasses
import html
import inspect
import io
import json
import os
import re
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import gin  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization import data as data_lib  # pylint: disable=g-import-not-at-top
from tf_memorization import experiments as experiments_lib  # pylint: disable=g-import-not-at-top
from tf_memorization import records  # pylint: disable=g-import-not-at-top
from tf_memorization import scores  # pylint: disable=g-import-not-at-top

REPORT_DIR = 'report'
INDEX_HTML = 'index.html'
# The estimate binary's outputs (estimate.py; not imported from there, since
# that module is also run as __main__ and registers gin configurables).
ESTIMATES_DIR = 'estimates'
MEMORIZATION_CSV = 'memorization.csv'
PAIRS_CSV = 'influence_pairs.csv'
TOPK_NPZ = 'influence_topk.npz'
SUMMARY_JSON = 'summary.json'

DPI = 100                # every PNG of the report
THUMBNAIL_SIZE = 64      # side of a streaming dataset's thumbnails
PER_CLASS = 8            # examples per class in the example grids
MAX_CLASSES = 20         # classes shown when the dataset has more
MAX_PAIR_TESTS = 12      # influenced test examples shown
PER_TEST = 6             # training examples shown per test example
MAX_FLIPPED = 16         # flipped examples shown in the label-noise section

# Files this module writes into the report folder (stale ones are removed).
_GENERATED = ('memorization_histogram.png', 'most_memorized.png',
              'least_memorized.png', 'influence_pairs.png', 'flipped.png')
_COPIED = ('ablation_histogram.png', 'removal.png', 'label_noise_roc.png',
           'leave_one_out.png')

_EXPERIMENTS = {
    'removal': 'Removal of memorized examples',
    'ablation': 'Last-layer ablation',
    'leave_one_out': 'Estimate vs direct leave-one-out',
    'ratio_sweep': 'Subset-ratio sweep',
}


@dataclasses.dataclass
class Report:
  """What build() wrote."""
  path: str                 # the index.html
  sections: list            # ids of the sections it holds, in order
  images: bool              # whether the dataset's images could be shown
  num_flipped_shown: int    # flipped-label examples drawn (and marked)
  seconds: float


# --------------------------------------------------------------------------
# Reading the inputs


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def _exists(path):
  return _gfile().exists(path)


def _read_text(path, errors='strict'):
  with _gfile().GFile(path, 'rb') as f:
    payload = f.read()
  try:
    return payload.decode('utf-8', errors)
  except UnicodeDecodeError as e:
    raise cli.UserError(f'{path} is not UTF-8 text ({e}): it was altered or '
                        'not written by this package. Run the binary that '
                        'wrote it again.') from e


def _rerun(workdir):
  return ('Run the estimate binary again to rewrite it (python -m '
          f'tf_memorization.estimate --workdir={workdir}).')


class _Json:
  """A JSON object of an estimates file, read as untrusted input.

  A workdir may be shared or come from someone else, so any value may have any
  type: a nested object or list is checked when it is used (a UserError
  naming the file and the key otherwise, not an AttributeError deep in the
  report), and leaves come back as they are, of whatever type, for _fmt and
  _e to show.
  """

  def __init__(self, value, path, workdir, where=''):
    self._value, self._path, self._workdir = value, path, workdir
    self._where = where

  def _error(self, key, kind, value):
    return cli.UserError(
        f'{self._path}: {self._where}{key} is a JSON {_json_type(value)} '
        f'where the estimate binary writes {kind}: the file was altered or '
        f'not written by this version of it. {_rerun(self._workdir)}')

  def __bool__(self):
    return bool(self._value)

  def get(self, key, default=None):
    """A leaf (any JSON value)."""
    return self._value.get(key, default)

  def keys(self):
    return self._value.keys()

  def items(self):
    return self._value.items()

  def obj(self, key):
    """The object at `key` (empty when absent or null)."""
    value = self._value.get(key)
    if value is None:
      value = {}
    if not isinstance(value, dict):
      raise self._error(key, 'an object', value)
    return _Json(value, self._path, self._workdir, f'{self._where}{key}.')

  def array(self, key):
    """The list at `key` (empty when absent or null), its items leaves."""
    value = self._value.get(key)
    if value is None:
      return []
    if not isinstance(value, list):
      raise self._error(key, 'a list', value)
    return value

  def objs(self, key):
    """The list of objects at `key`."""
    out = []
    for number, value in enumerate(self.array(key)):
      if not isinstance(value, dict):
        raise self._error(f'{key}[{number}]', 'an object', value)
      out.append(_Json(value, self._path, self._workdir,
                       f'{self._where}{key}[{number}].'))
    return out


def _json_type(value):
  for kind, name in ((dict, 'object'), (list, 'list'), (str, 'string'),
                     (bool, 'boolean'), ((int, float), 'number')):
    if isinstance(value, kind):
      return name
  return 'null'


def _read_json(path, workdir):
  """The _Json of the object in file `path`, or None when there is none."""
  if not _exists(path):
    return None
  try:
    value = json.loads(_read_text(path))
  except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
    raise cli.UserError(f'{path} is not valid JSON ({e}). '
                        f'{_rerun(workdir)}') from e
  if not isinstance(value, dict):
    raise cli.UserError(f'{path} holds a JSON {_json_type(value)}, not the '
                        f'object the estimate binary writes. '
                        f'{_rerun(workdir)}')
  return _Json(value, path, workdir)


def _csv_error(path, line, workdir, what):
  return cli.UserError(f'{path} line {line}: {what}: the file was altered or '
                       f'not written by the estimate binary. {_rerun(workdir)}')


def _read_csv(path, workdir, float_columns=(), int_columns=()):
  """The named columns of a CSV with a header row, as numpy arrays.

  Values go straight into typed arrays (empty cells: NaN, or -1 in an
  integer column), so the
  memorization table of ImageNet (1.28M rows) costs megabytes, not the
  gigabyte its cells would as Python strings. A cell that is no number (the
  file may come from anyone) is a UserError naming the file, its line and
  column.
  """
  if not _exists(path):
    raise cli.UserError(f'{path} is missing. {_rerun(workdir)}')
  reader = csv.reader(io.StringIO(_read_text(path)))
  try:
    header = next(reader)
  except (StopIteration, csv.Error) as e:
    raise cli.UserError(f'{path} has no header row ({e or "empty"}). '
                        f'{_rerun(workdir)}') from e
  missing = [c for c in (*float_columns, *int_columns) if c not in header]
  if missing:
    raise cli.UserError(f'{path} lacks the columns {missing}: it was not '
                        'written by this version of the estimate binary. Run '
                        'it again.')
  wanted = ([(header.index(c), array.array('d'), float, float('nan'))
             for c in float_columns] +
            [(header.index(c), array.array('q'), int, -1)
             for c in int_columns])
  try:
    for row in reader:
      for column, values, kind, empty in wanted:
        try:
          cell = row[column]
          values.append(kind(cell) if cell else empty)
        except IndexError as e:
          raise _csv_error(path, reader.line_num, workdir,
                           f'{len(row)} cells, the header {len(header)}') from e
        except (ValueError, OverflowError) as e:
          raise _csv_error(
              path, reader.line_num, workdir,
              f'{cell[:40]!r} in column {header[column]!r}, not '
              f'{"a number" if kind is float else "a 64-bit integer"}') from e
  except csv.Error as e:
    raise _csv_error(path, reader.line_num, workdir, f'bad CSV ({e})') from e
  names = (*float_columns, *int_columns)
  return {name: np.array(values, np.float64 if kind is float else np.int64)
          for name, (_, values, kind, _) in zip(names, wanted)}


@dataclasses.dataclass
class _Inputs:
  summary: _Json
  memorization: np.ndarray   # [n], NaN where undefined
  stderr: np.ndarray
  consistency: np.ndarray
  k_in: np.ndarray
  k_out: np.ndarray
  labels: np.ndarray         # trained-on train labels
  original_labels: np.ndarray
  test_labels: np.ndarray
  train_ids: np.ndarray
  test_ids: np.ndarray
  pairs: dict                # train, test (int arrays), influence, stderr
  topk_indices: np.ndarray   # [n_test, topk]
  topk_influence: np.ndarray
  training_config: str

  @property
  def flipped(self):
    return self.labels != self.original_labels


def _is_real(array_):
  return (np.issubdtype(array_.dtype, np.integer) or
          np.issubdtype(array_.dtype, np.floating))


def _check_indices(path, workdir, name, indices, low, high):
  """A UserError unless every index is in [low, high) (else the report would
  index the labels with it, or wrap a negative one round silently)."""
  bad = np.flatnonzero((indices < low) | (indices >= high))
  if len(bad):
    raise cli.UserError(
        f'{path}: {name} {int(indices[bad[0]])} is out of range (the workdir '
        f'has {high} such examples): the estimates belong to another workdir '
        f'or were altered. {_rerun(workdir)}')


def _load_inputs(workdir, estimates_dir):
  summary_path = os.path.join(estimates_dir, SUMMARY_JSON)
  if not _exists(summary_path):
    raise cli.UserError(
        f'{summary_path} is missing: run the estimate binary first '
        f'(python -m tf_memorization.estimate --workdir={workdir}).')
  summary = _read_json(summary_path, workdir)
  arrays, _ = records.read_dataset_file(workdir)
  dataset_path = os.path.join(workdir, records.DATASET_FILE)
  for name in ('train_labels', 'test_labels', 'original_train_labels'):
    if not np.issubdtype(arrays[name].dtype, np.integer):
      raise cli.UserError(f'{dataset_path}: its {name} are '
                          f'{arrays[name].dtype}, not integers. '
                          f'{records.fix_hint(dataset_path)}')
  mem_path = os.path.join(estimates_dir, MEMORIZATION_CSV)
  mem = _read_csv(mem_path, workdir,
                  ('memorization', 'memorization_stderr', 'consistency'),
                  ('k_in', 'k_out'))
  n, n_test = len(arrays['train_labels']), len(arrays['test_labels'])
  if len(mem['memorization']) != n:
    raise cli.UserError(
        f'{estimates_dir}/{MEMORIZATION_CSV} has {len(mem["memorization"])} '
        f'rows but {workdir}/{records.DATASET_FILE} {n} training examples: '
        'the estimates belong to another workdir. Run the estimate binary '
        'again.')
  pairs_path = os.path.join(estimates_dir, PAIRS_CSV)
  pairs = _read_csv(pairs_path, workdir, ('influence', 'influence_stderr'),
                    ('train_index', 'test_index'))
  _check_indices(pairs_path, workdir, 'train_index', pairs['train_index'], 0, n)
  _check_indices(pairs_path, workdir, 'test_index', pairs['test_index'], 0,
                 n_test)
  topk_path = os.path.join(estimates_dir, TOPK_NPZ)
  if _exists(topk_path):
    topk = records.load_npz(topk_path)
    indices, influence = topk.get('train_indices'), topk.get('influence')
    if (indices is None or influence is None or indices.ndim != 2 or
        indices.shape != influence.shape or len(indices) != n_test or
        not np.issubdtype(indices.dtype, np.integer) or
        not _is_real(influence)):
      raise cli.UserError(
          f'{topk_path} is not an integer train_indices and a real influence '
          f'array of shape [{n_test}, topk] (the test examples of '
          f'{dataset_path}): it was altered or belongs to another workdir. '
          f'{_rerun(workdir)}')
    _check_indices(topk_path, workdir, 'train index', indices, -1, n)
  else:
    indices = np.zeros((n_test, 0), np.int64)
    influence = np.zeros((n_test, 0), np.float64)
  config_path = os.path.join(workdir, records.CONFIG_FILE)
  return _Inputs(
      summary=summary,
      memorization=mem['memorization'], stderr=mem['memorization_stderr'],
      consistency=mem['consistency'], k_in=mem['k_in'], k_out=mem['k_out'],
      labels=arrays['train_labels'],
      original_labels=arrays['original_train_labels'],
      test_labels=arrays['test_labels'],
      train_ids=arrays['train_ids'], test_ids=arrays['test_ids'],
      pairs={'train': pairs['train_index'], 'test': pairs['test_index'],
             'influence': pairs['influence'],
             'stderr': pairs['influence_stderr']},
      topk_indices=np.asarray(indices, np.int64),
      topk_influence=np.asarray(influence, np.float64),
      # Shown, not parsed here: undecodable bytes are shown replaced.
      training_config=(_read_text(config_path, errors='replace')
                       if _exists(config_path) else ''))


def _ablation_memorization(workdir, log):
  """[(variant name, number of trials, memorization [n])] of the ablation."""
  gfile = _gfile()
  pattern = os.path.join(workdir, experiments_lib.EXPERIMENTS_DIR,
                         'ablation_last*')
  found = []
  for directory in sorted(gfile.glob(pattern)):
    match = re.search(r'ablation_last(\d+)$', directory.rstrip('/'))
    if not match or not records.list_records(directory):
      continue
    blocks = int(match.group(1))
    try:
      loaded = records.load(directory, margins=False)
    except records.RecordError as e:
      log(f'Report: the ablation records in {directory} are unreadable ({e}); '
          'the histogram leaves them out.')
      continue
    mem = scores.memorization(loaded.masks, loaded.train_correct)
    name = ('last layer only' if blocks == 0 else
            f'last {blocks} blocks + head')
    found.append((blocks, name, loaded.num_trials, mem.memorization))
  return [f[1:] for f in sorted(found)]


# --------------------------------------------------------------------------
# Images


def _load_dataset_kwargs():
  """load_dataset's arguments under the parsed gin config."""
  signature = inspect.signature(data_lib.load_dataset)
  kwargs = {name: p.default for name, p in signature.parameters.items()}
  kwargs.update(gin.get_bindings(data_lib.load_dataset))
  return kwargs


def _thumbnail(image, size):
  """The central square of `image` (uint8 [H, W, C]) resized to size x size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height, width = image.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  image = image[top:top + side, left:left + side]
  if side == size:
    return np.ascontiguousarray(image)
  channels = image.shape[2]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.BICUBIC), np.uint8)
  return out.reshape(size, size, channels)


def read_examples(builder, split, indices, ids, size=THUMBNAIL_SIZE, log=None):
  """Thumbnails of a few examples of a tfds split, read by tfds id.

  Only the shards holding the examples asked for are read, each up to its
  last such example (slices of the split, when `split` is a plain split
  name), and a filter on each record's tfds id keeps exactly them before any
  image is decoded, as data.StreamingPipeline does; their images are decoded
  and cut to a central square of side `size`. (TFRecord shards are read
  sequentially, so for ImageNet this reads on the order of a few GB per
  hundred examples.)

  Args:
    builder: a prepared tfds builder.
    split: the tfds split the indices refer to (in tfds's order).
    indices: positions in the split.
    ids: the split's tfds ids (W/dataset.npz).
    size: thumbnail side.
    log: callable for a line when the split has to be scanned.

  Returns:
    {index: uint8 [size, size, C]}; examples not found are left out.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  indices = sorted({int(i) for i in indices})
  if not indices:
    return {}
  wanted = {str(ids[i]): i for i in indices}
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(list(wanted)),
          tf.constant(list(wanted.values()), tf.int64)), -1)
  channels = int(builder.info.features['image'].shape[-1] or 0)
  sources = []
  if re.fullmatch(r'[\w-]+', split):
    # One slice per shard file (the part of the tfds id before '__'), from
    # its first to its last example asked for: each shard is read once.
    ranges = {}
    for i in indices:
      shard = str(ids[i]).rsplit('__', 1)[0] if '__' in str(ids[i]) else i
      low, high = ranges.get(shard, (i, i))
      ranges[shard] = (min(low, i), max(high, i))
    sources.append('+'.join(f'{split}[{low}:{high + 1}]'
                            for low, high in sorted(ranges.values())))
  sources.append(split)  # the whole split, if the slices missed some
  found = {}
  for number, source in enumerate(sources):
    if number and log:
      log(f'Report: scanning split {split} of {builder.name} for '
          f'{len(wanted) - len(found)} examples not found by position.')
    ds = builder.as_dataset(
        split=source, shuffle_files=False,
        read_config=tfds.ReadConfig(add_tfds_id=True),
        decoders={'image': tfds.decode.SkipDecoding()})
    ds = ds.filter(lambda ex: table.lookup(ex['tfds_id']) >= 0)
    for example in ds:
      index = wanted[example['tfds_id'].numpy().decode()]
      image = tf.io.decode_image(example['image'], channels=channels,
                                 expand_animations=False).numpy()
      found[index] = _thumbnail(image, size)
    if len(found) == len(wanted):
      break
  return found


class _Images:
  """The images of the examples the report shows (None where unavailable)."""

  def __init__(self, train=None, test=None, class_names=None, note=None):
    self._train, self._test = train or {}, test or {}
    self.class_names = class_names
    self.note = note

  @property
  def available(self):
    return bool(self._train or self._test)

  def train(self, i):
    return self._train.get(int(i))

  def test(self, j):
    return self._test.get(int(j))


def _load_images(inputs, train_indices, test_indices, log):
  """Images of the chosen examples, from the dataset of the gin config."""
  start = time.perf_counter()
  kwargs = _load_dataset_kwargs()
  name = kwargs.get('name')
  if not isinstance(name, str):
    return _Images(note='the config names no dataset (load_dataset.name), so '
                   'no images are shown')
  streaming = kwargs.get('streaming', 'auto')
  if streaming == 'auto':
    streaming = name in data_lib.STREAMING_DATASETS
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    if streaming:
      builder = data_lib.prepare_builder(name, kwargs.get('data_dir'),
                                         kwargs.get('download', True))
      log(f'Report: reading {len(train_indices) + len(test_indices)} '
          f'examples of {name} by tfds id.')
      train = read_examples(builder, kwargs.get('train_split', 'train'),
                            train_indices, inputs.train_ids, log=log)
      test = read_examples(builder, kwargs.get('test_split', 'test'),
                           test_indices, inputs.test_ids, log=log)
    else:
      dataset = data_lib.load_dataset()
      builder = dataset.builder
      for split, ids in ((dataset.train, inputs.train_ids),
                         (dataset.test, inputs.test_ids)):
        if len(split.ids) != len(ids) or not np.array_equal(split.ids, ids):
          return _Images(note=f'the dataset {name} read now is not the one '
                         f'the trials ran on (its tfds ids differ from '
                         f'{records.DATASET_FILE}), so no images are shown')
      train = {int(i): dataset.train.images[i] for i in train_indices}
      test = {int(j): dataset.test.images[j] for j in test_indices}
  except (data_lib.DataNotPreparedError, ValueError, TypeError, OSError,
          tf.errors.OpError) as e:
    message = ' '.join(str(e).split())
    log(f'Report: no images ({message}).')
    return _Images(note=f'the images of {name} could not be read here '
                   f'({message})')
  names = None
  try:
    names = list(builder.info.features['label'].names)
  except (AttributeError, KeyError, TypeError):
    pass
  log(f'Report: read {len(train) + len(test)} images of {name} in '
      f'{time.perf_counter() - start:.1f}s.')
  return _Images(train, test, names)


# --------------------------------------------------------------------------
# Choosing the examples


def _per_class(order, labels, num_per_class):
  """{class: the first `num_per_class` of `order` (indices) with that label}."""
  order = np.asarray(order, np.int64)
  if not len(order):
    return {}
  labels = np.asarray(labels)[order]
  by_class = np.argsort(labels, kind='stable')  # keeps `order` within a class
  grouped, grouped_labels = order[by_class], labels[by_class]
  first = np.r_[0, np.flatnonzero(np.diff(grouped_labels)) + 1]
  rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first,
                                                                len(order)]))
  keep = rank < num_per_class
  out = {}
  for i, c in zip(grouped[keep].tolist(), grouped_labels[keep].tolist()):
    out.setdefault(int(c), []).append(int(i))
  return out


def _example_grids(inputs, per_class, max_classes):
  """(classes, most memorized per class, least memorized per class)."""
  mem = inputs.memorization
  defined = np.flatnonzero(np.isfinite(mem))
  most = defined[np.lexsort((defined, inputs.stderr[defined], -mem[defined]))]
  # Typical: the lowest memorization (negative estimates count as 0), ties to
  # the examples most often right when held out.
  consistency = np.nan_to_num(inputs.consistency[defined], nan=-1.0)
  least = defined[np.lexsort((defined, -consistency,
                              np.maximum(mem[defined], 0.0)))]
  top = _per_class(most, inputs.labels, per_class)
  bottom = _per_class(least, inputs.labels, per_class)
  classes = sorted(top)
  if len(classes) > max_classes:  # the classes that memorize the most
    score = {c: float(np.mean(mem[top[c]])) for c in classes}
    classes = sorted(classes, key=lambda c: (-score[c], c))[:max_classes]
  return classes, top, bottom


def _pair_rows(inputs, max_tests, per_test):
  """[(test index, [(train index, influence, stderr or None, is_pair)])]."""
  pairs = inputs.pairs
  by_test = {}
  for i, j, value, stderr in zip(pairs['train'], pairs['test'],
                                 pairs['influence'], pairs['stderr']):
    by_test.setdefault(int(j), {})[int(i)] = (float(value), float(stderr),
                                              True)
  if by_test:
    order = sorted(by_test, key=lambda j: (-max(v[0] for v in
                                               by_test[j].values()), j))
  elif inputs.topk_indices.shape[1]:  # no pair: the largest top-1 influences
    top1 = inputs.topk_influence[:, 0]
    valid = np.flatnonzero(np.isfinite(top1) & (inputs.topk_indices[:, 0] >= 0))
    order = valid[np.lexsort((valid, -top1[valid]))].tolist()
  else:
    order = []
  rows = []
  for j in order[:max_tests]:
    entries = dict(by_test.get(j, {}))
    if inputs.topk_indices.shape[1]:
      for i, value in zip(inputs.topk_indices[j], inputs.topk_influence[j]):
        if i >= 0 and np.isfinite(value) and int(i) not in entries:
          entries[int(i)] = (float(value), None, False)
    # Best first; at equal influence the pairs over the thresholds first.
    ranked = sorted(entries.items(), key=lambda e: (-e[1][0], not e[1][2],
                                                    e[0]))
    rows.append((j, [(i, *v) for i, v in ranked[:per_test]]))
  return rows


# --------------------------------------------------------------------------
# Figures (matplotlib's Agg canvas through Figure, no pyplot state)


def _figure(width, height):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=(width, height), dpi=DPI)


def _save(fig, files, name):
  """Renders `fig` into files[name] (the PNGs are written once the whole page
  is built: a bad input found half way leaves no partial report)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=DPI)
  files[name] = buffer.getvalue()
  return name


_CELL = 1.0          # image side, inches
_CELL_WIDTH = 1.2    # column pitch
_CAPTION = 0.42      # two caption lines under an image
_ROW_GAP = 0.12
_TITLE_WIDTH = 1.1   # row titles at the left


def _figure_text(value):
  """`value` as text for a figure, every `$` escaped.

  matplotlib reads text between two `$` as mathtext, so a class name or a JSON
  value such as `$\\foo$` would fail the drawing; escaped, it is drawn as is.
  """
  return _text(value, None).replace('$', r'\$')


def _draw_image(ax, image, x, y, side):
  """Draws `image` fitted into the square at (x, y) (inches, y down)."""
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  if image is None:
    ax.add_patch(Rectangle((x, y), side, side, facecolor='#eeeeee',
                           edgecolor='none'))
    ax.text(x + side / 2, y + side / 2, 'no image', ha='center', va='center',
            fontsize=6, color='#888888')
    return
  image = np.asarray(image)
  height, width = image.shape[:2]
  scale = side / max(height, width)
  w, h = width * scale, height * scale
  x0, y0 = x + (side - w) / 2, y + (side - h) / 2
  small = max(height, width) * 2 <= side * DPI  # upscaled at least 2x
  kwargs = dict(extent=(x0, x0 + w, y0 + h, y0),
                interpolation='nearest' if small else 'antialiased')
  if image.ndim == 2 or image.shape[2] == 1:
    ax.imshow(image.reshape(height, width), cmap='gray', vmin=0, vmax=255,
              **kwargs)
  else:
    ax.imshow(image[..., :3], **kwargs)


def _grid(files, name, rows, title_width=_TITLE_WIDTH, gap_after=None):
  """One PNG of labelled image rows.

  Args:
    files: {name: PNG bytes} of the report, which gets this one.
    name: the PNG's file name.
    rows: [(row title, [cell])], a cell a dict: image (uint8 array or None),
      lines (one or two caption lines), flipped (red border and caption),
      highlight (blue border).
    title_width: inches for the row titles (0: none).
    gap_after: extra space after this many cells of each row.
  """
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  columns = max(len(cells) for _, cells in rows)
  gap = 0.35 if gap_after else 0.0
  row_height = _CELL + _CAPTION + _ROW_GAP
  width = title_width + columns * _CELL_WIDTH + gap + 0.1
  height = len(rows) * row_height + 0.1
  fig = _figure(width, height)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.set_axis_off()
  for r, (title, cells) in enumerate(rows):
    y = 0.08 + r * row_height
    if title_width:
      ax.text(0.08, y + _CELL / 2, _figure_text(title), ha='left',
              va='center', fontsize=9)
    for c, cell in enumerate(cells):
      x = (title_width + c * _CELL_WIDTH + (_CELL_WIDTH - _CELL) / 2
           + (gap if gap_after and c >= gap_after else 0.0))
      _draw_image(ax, cell.get('image'), x, y, _CELL)
      if cell.get('flipped'):
        edge, line_width = '#d62728', 3.0
      elif cell.get('highlight'):
        edge, line_width = '#1f77b4', 2.0
      else:
        edge, line_width = '#999999', 0.6
      ax.add_patch(Rectangle((x, y), _CELL, _CELL, fill=False,
                             edgecolor=edge, linewidth=line_width))
      for number, line in enumerate(cell.get('lines', ())):
        ax.text(x + _CELL / 2, y + _CELL + 0.05 + 0.17 * number,
                _figure_text(line),
                ha='center', va='top', fontsize=7,
                color='#d62728' if cell.get('flipped') and not number
                else 'black')
  ax.set_xlim(0, width)
  ax.set_ylim(height, 0)
  ax.set_aspect('auto')
  return _save(fig, files, name)


def _label_text(inputs, i):
  label, original = int(inputs.labels[i]), int(inputs.original_labels[i])
  return (f'label {label} (was {original})' if label != original
          else f'label {label}')


def _memorization_cell(inputs, images, i):
  return {'image': images.train(i), 'flipped': bool(inputs.flipped[i]),
          'lines': [_label_text(inputs, i),
                    f'{inputs.memorization[i]:.2f} ± {inputs.stderr[i]:.2f}']}


def _class_title(images, c):
  names = images.class_names  # the dataset's (any text: _grid escapes it)
  if names and 0 <= c < len(names) and _text(names[c]) != str(c):
    return f'class {c}\n{_text(names[c])[:16]}'
  return f'class {c}'


def _histogram(files, inputs, variants):
  full = inputs.memorization[np.isfinite(inputs.memorization)]
  if not len(full):
    return None
  fig = _figure(6.5, 4.0)
  ax = fig.add_subplot()
  low = min([-0.1, float(full.min())] +
            [float(np.nanmin(v)) for _, _, v in variants
             if np.isfinite(v).any()])
  edges = np.linspace(-1.025, 1.025, 42)  # bins centred on multiples of 0.05
  edges = edges[np.searchsorted(edges, low, side='right') - 1:]
  k = _text(inputs.summary.get('num_trials'))
  ax.hist(full, bins=edges, histtype='stepfilled', alpha=0.5, log=True,
          label=_figure_text(f'full network ({k} trials)'))
  for name, trials, values in variants:
    values = values[np.isfinite(values)]
    ax.hist(values, bins=edges, histtype='stepfilled', alpha=0.5, log=True,
            label=_figure_text(f'{name} ({trials} trials)'))
  # Drawn only when it is a number (the run table shows whatever it is).
  threshold = _number(inputs.summary.obj('pair_thresholds').get(
      'memorization'))
  if threshold is not None:
    ax.axvline(threshold, color='grey', ls='--', lw=0.8,
               label=f'memorization {threshold:g}')
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel('memorization estimate')
  ax.set_ylabel('training examples (log scale)')
  ax.set_title('Memorization of the training examples')
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, files, 'memorization_histogram.png')


# --------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222;
       line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
nav { font-size: 0.9em; }
nav a { margin-right: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.8em;
      overflow-x: auto; font-size: 0.82em; }
img { max-width: 100%; height: auto; }
figure { margin: 0.8em 0; }
figcaption, .note { color: #555; font-size: 0.9em; }
.flipped { color: #d62728; font-weight: bold; }
code { background: #f3f3f3; padding: 0 0.25em; }
details { margin: 0.5em 0; }
summary { cursor: pointer; color: #1f4e99; }
"""


# Every value that reaches the page comes from files anyone may have written
# (a workdir may be shared or copied), so markup is a type: _Html, made only
# from this module's literals (_html's templates) with every value filled in
# escaped. The page and its parts (_table, _figure_html, _Sections) escape
# whatever is not _Html, so a value that skipped _fmt or _e shows as text,
# never as markup; and joining or adding plain text to markup escapes it.


class _Html(str):
  """Markup, safe to put in the page as it is (from _html, _e, _fmt)."""

  def __add__(self, other):
    return _Html(str.__add__(self, _e(other)))

  def __radd__(self, other):
    return _Html(str.__add__(_e(other), self))


def _e(value):
  """`value` as escaped text (str() of it); markup is kept as it is."""
  if isinstance(value, _Html):
    return value
  return _Html(html.escape(str(value), quote=True))


def _html(template, *values):
  """The markup `template` (a literal of this module) with its `{}` fields
  filled by `values`, each escaped (_e) unless it is markup already."""
  return _Html(template.format(*(_e(v) for v in values)))


def _join(parts, separator=''):
  return _Html(_e(separator).join(_e(p) for p in parts))


def _number(value):
  """`value` as a finite float when it is a real number, else None."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)):
    return None
  value = float(value)
  return value if np.isfinite(value) else None


def _text(value, digits=4):
  """Any value, e.g. a leaf of a JSON file, as plain text.

  Numbers are formatted (`digits` decimals, None: the shortest form), a
  missing or non-finite one is a dash; text is as it is; lists and objects
  show their items, so a string a hostile file put where a number belongs
  is shown (escaped by the callers), not a crash.
  """
  if value is None:
    return '–'
  if isinstance(value, (bool, np.bool_)):
    return 'yes' if value else 'no'
  if isinstance(value, (int, np.integer)):
    return f'{int(value):,}'
  if isinstance(value, (float, np.floating)):
    if not np.isfinite(value):
      return '–'
    return (f'{float(value):g}' if digits is None
            else f'{float(value):.{digits}f}')
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return '[' + ', '.join(_text(v, digits) for v in value) + ']'
  if isinstance(value, dict):
    return '{' + ', '.join(f'{_text(k, digits)}: {_text(v, digits)}'
                           for k, v in value.items()) + '}'
  return str(value)


def _fmt(value, digits=4):
  """`value` (a number, or whatever a file holds in its place) as markup."""
  return _e(_text(value, digits))


def _mean_std(pair):
  """'mean ± std' of a [mean, std] pair; anything else shown as it is."""
  if not isinstance(pair, list) or len(pair) > 2:
    return _fmt(pair)
  if not pair or pair[0] is None:
    return _fmt(None)
  if len(pair) < 2 or pair[1] is None:
    return _fmt(pair[0])
  return _html('{} ± {}', _fmt(pair[0]), _fmt(pair[1]))


def _table(header, rows, numeric=()):
  """An HTML table; cells are escaped text unless they are markup (_Html)."""
  out = [_html('<table>'), _html('<tr>{}</tr>', _join(
      _html('<th>{}</th>', h) for h in header))]
  for row in rows:
    out.append(_html('<tr>{}</tr>', _join(
        _html('<td class="num">{}</td>' if column in numeric else
              '<td>{}</td>', cell) for column, cell in enumerate(row))))
  out.append(_html('</table>'))
  return _join(out, '\n')


def _figure_html(src, alt, caption=None):
  """An image of the report folder, by one of the names this module writes
  (never a name from an input, so a src cannot lead anywhere else)."""
  if src not in _GENERATED + _COPIED:
    raise ValueError(f'{src!r} is not a file of the report')
  return _html('<figure><img src="{}" alt="{}">{}</figure>', src, alt,
               _html('<figcaption>{}</figcaption>', caption) if caption
               else '')


def _label_html(inputs, i):
  label, original = int(inputs.labels[i]), int(inputs.original_labels[i])
  if label != original:
    return _html('<span class="flipped">{} (was {})</span>', label, original)
  return _e(label)


def _examples_table(inputs, indices):
  rows = [[int(i), inputs.train_ids[i], _label_html(inputs, i),
           _fmt(inputs.memorization[i]), _fmt(inputs.stderr[i]),
           _fmt(inputs.consistency[i]), f'{inputs.k_in[i]} / {inputs.k_out[i]}']
          for i in indices]
  return _html('<details><summary>The examples shown, as a table</summary>'
               '{}</details>', _table(
                   ['index', 'tfds id', 'label', 'memorization', 'stderr',
                    'held-out accuracy', 'k_in / k_out'], rows,
                   numeric=(0, 3, 4, 5)))


class _Sections:
  """The report's sections, in order."""

  def __init__(self):
    self.items = []

  def add(self, section_id, title, body):
    # Ids are this module's literals, used bare in id= and href="#...".
    if not re.fullmatch(r'[a-z]+(-[a-z]+)*', section_id):
      raise ValueError(f'bad section id {section_id!r}')
    self.items.append((section_id, _e(title), _e(body)))

  def html(self):
    return _join((_html('<section id="{}">\n<h2>{}</h2>\n{}\n</section>', i, t,
                        b) for i, t, b in self.items), '\n')

  def nav(self):
    return _html('<nav>{}</nav>', _join(
        _html('<a href="#{}">{}</a>', i, t) for i, t, _ in self.items))


def _run_rows(summary):
  dataset = summary.obj('dataset')
  design = summary.obj('design')
  split = summary.obj('split_half')
  rows = [
      ('dataset', _html('{} (version {}, {} classes, images {})',
                        _fmt(dataset.get('name')), _fmt(dataset.get('version')),
                        _fmt(dataset.get('num_classes')),
                        _fmt(dataset.get('image_shape')))),
      ('training / test examples', _html('{} / {}', _fmt(summary.get(
          'num_train')), _fmt(summary.get('num_test')))),
      ('trials (k)', _fmt(summary.get('num_trials'))),
      ('subset ratio', _join((_fmt(r, None) for r in
                              summary.array('subset_ratios')), ', ')),
      ('subset design', _join((_html('{} {}', k, _fmt(v, None))
                               for k, v in design.items()), ', ')),
      ('mean accuracy of the trials: train / held-out / test',
       _html('{} / {} / {}', _fmt(summary.get('mean_train_accuracy')),
             _fmt(summary.get('mean_heldout_accuracy')),
             _fmt(summary.get('mean_test_accuracy')))),
      ('Lemma 2.1 bound on E[(estimate − true)²]',
       _fmt(summary.get('lemma_2_1_bound'))
       if summary.get('lemma_2_1_bound') is not None
       else 'n/a (several subset ratios)'),
  ]
  if split:
    rows += [
        (_html('split-half consistency (even vs odd trials, {}): memorization '
               'Pearson / Spearman',
               _join((_fmt(t) for t in split.array('trials_per_half')), '/')),
         _html('{} / {}', _fmt(split.get('memorization_pearson'), 3),
               _fmt(split.get('memorization_spearman'), 3))),
        ('split-half pairs: per half, Jaccard',
         _html('{}, {}', _join((_fmt(p) for p in split.array(
             'pairs_per_half')), ' / '), _fmt(split.get('pairs_jaccard'), 3))),
    ]
  else:
    rows.append(('split-half consistency',
                 'not computed (needs k ≥ 4 and Estimator.split_half = True)'))
  for threshold, count in summary.obj('memorization_counts').items():
    rows.append((_html('examples with memorization ≥ {}', threshold),
                 _fmt(count)))
  thresholds = summary.obj('pair_thresholds')
  rows += [
      ('examples with no estimate (never in or never out)',
       _fmt(summary.get('undefined_memorization'))),
      (_html('memorization stderr: median / max / max where memorization ≥ {}',
             _fmt(thresholds.get('memorization', 'threshold'), None)),
       _html('{} / {} / {}', _fmt(summary.get('median_memorization_stderr')),
             _fmt(summary.get('max_memorization_stderr')),
             _fmt(summary.get('max_stderr_of_memorized')))),
      (_html('high-influence pairs (influence ≥ {}, memorization ≥ {}, same '
             'label: {})', _fmt(thresholds.get('influence'), None),
             _fmt(thresholds.get('memorization'), None),
             _fmt(thresholds.get('same_label'))),
       _fmt(summary.get('num_pairs'))),
  ]
  correlation = summary.obj('memorization_vs_influence')
  if correlation:
    rows.append(('memorization vs largest influence: Pearson / Spearman',
                 _html('{} / {}', _fmt(correlation.get('pearson'), 3),
                       _fmt(correlation.get('spearman'), 3))))
  rows += [('influence scores', _fmt(summary.get('influence_scores'))),
           ('config fingerprint', _fmt(summary.get('fingerprint'))),
           ('workdir', _fmt(summary.get('workdir')))]
  return rows


def _copy(estimates_dir, files, name):
  """Copies an experiment's PNG into the report's files; its name, or None."""
  source = os.path.join(estimates_dir, name)
  if not _exists(source):
    return None
  with _gfile().GFile(source, 'rb') as f:
    files[name] = f.read()
  return name


def _embed_copy(estimates_dir, files, name, alt, caption):
  """Copies an experiment's PNG and returns its figure HTML ('' if absent)."""
  png = _copy(estimates_dir, files, name)
  if not png:
    return _Html()
  return _figure_html(png, alt, caption)


def _removal_section(removal):
  table = removal.objs('table')
  curve = [e for e in table if e.get('condition') in ('full', 'memorized',
                                                      'random')]
  influence = [e for e in table if e.get('condition') in (
      'full', 'influence_set', 'influence_random')]

  def rows(entries):
    return [[_fmt(e.get('condition')), '' if e.get('threshold') is None
             else _fmt(e.get('threshold'), None), _fmt(e.get('num_removed')),
             _mean_std(e.get('test_accuracy')),
             _mean_std(e.get('influenced_accuracy'))] for e in entries]

  header = ['condition', 'memorization ≥', 'removed', 'test accuracy',
            'accuracy on the influenced test examples']
  parts = [_html('<p>Test accuracy (mean ± std over {} models a condition) '
                 'after removing the training examples with memorization over '
                 'each threshold, against removing as many random '
                 'examples.</p>', _fmt(removal.get('repeats'))),
           _table(header, rows(curve), numeric=(2, 3, 4))]
  if any(e.get('condition') == 'influence_set' for e in influence):
    parts += [_html('<h3>Influence set</h3>'),
              _html('<p>Removing the training examples of the high-influence '
                    'pairs ({} influenced test examples), against removing as '
                    'many random examples.</p>',
                    _fmt(removal.get('num_influenced_test_examples'))),
              _table(header, rows(influence), numeric=(2, 3, 4))]
  return _join(parts, '\n')


def _not_run_section(summary, shown):
  items = []
  for kind, title in _EXPERIMENTS.items():
    if kind not in shown:
      items.append(_html('<li>{}: <code>{}</code> (estimate binary)</li>',
                         title, f'Estimator.experiments = ({kind!r},)'))
  if not summary.obj('label_noise'):
    items.append(_html('<li>Label-noise detection: <code>label_noise.fraction '
                       '= 0.05</code> (train binary, in a new workdir)</li>'))
  if not items:
    return None
  return _html('<p>These sections are left out because their experiments did '
               'not run; the binding that enables each:</p><ul>{}</ul>',
               _join(items))


# --------------------------------------------------------------------------
# The report


def build(workdir, output_dir=None, estimates_dir=None, parse_config=True,
          gin_bindings=(), log=print):
  """Writes the HTML report of `workdir`'s estimates; returns a Report.

  Args:
    workdir: the train binary's workdir, with estimates.
    output_dir: the report folder (default W/report).
    estimates_dir: where the estimates are (default W/estimates).
    parse_config: parse W/operative_config.gin and `gin_bindings` first (this
      replaces the process's gin config); False to use the config already
      parsed (the estimate binary's).
    gin_bindings: extra bindings, e.g. "load_dataset.data_dir = '/data'"
      when the data moved.
    log: callable taking one line.
  """
  start = time.perf_counter()
  estimates_dir = estimates_dir or os.path.join(workdir, ESTIMATES_DIR)
  output_dir = output_dir or os.path.join(workdir, REPORT_DIR)
  if parse_config:
    config = os.path.join(workdir, records.CONFIG_FILE)
    cli.parse_gin([config] if _exists(config) else [], list(gin_bindings))
  inputs = _load_inputs(workdir, estimates_dir)
  created = cli.check_writable(output_dir)
  try:
    page, files, sections, images, flipped_drawn = _render(
        workdir, estimates_dir, inputs, log)
  except BaseException:
    cli.remove_if_empty(created)  # nothing of the report was written
    raise
  # Only now is anything written: the images first, then the page showing
  # them.
  for name, payload in files.items():
    records.atomic_replace(os.path.join(output_dir, name), payload)
  path = os.path.join(output_dir, INDEX_HTML)
  records.atomic_write_text(path, page)
  for name in _GENERATED + _COPIED:  # left over from an earlier report
    stale = os.path.join(output_dir, name)
    if name not in files and _exists(stale):
      _gfile().remove(stale)
  seconds = time.perf_counter() - start
  return Report(path=path, sections=[s[0] for s in sections.items],
                images=images.available, num_flipped_shown=flipped_drawn,
                seconds=seconds)


def _render(workdir, estimates_dir, inputs, log):
  """The page and its PNGs, in memory: (page, {name: PNG bytes}, _Sections,
  _Images, flipped examples drawn)."""
  summary = inputs.summary
  classes, top, bottom = _example_grids(inputs, PER_CLASS, MAX_CLASSES)
  pair_rows = _pair_rows(inputs, MAX_PAIR_TESTS, PER_TEST)
  flipped = np.flatnonzero(inputs.flipped)
  flipped_shown = flipped[np.lexsort((flipped, -np.nan_to_num(
      inputs.memorization[flipped], nan=-np.inf)))][:MAX_FLIPPED]
  train_needed = set(flipped_shown.tolist())
  for c in classes:
    train_needed.update(top[c])
    train_needed.update(bottom.get(c, []))
  for _, entries in pair_rows:
    train_needed.update(i for i, *_ in entries)
  images = _load_images(inputs, sorted(train_needed),
                        sorted(j for j, _ in pair_rows), log)

  files, flipped_drawn = {}, 0  # the PNGs, written at the end
  sections = _Sections()
  dataset = summary.obj('dataset')

  sections.add('run', 'Run', _table(['quantity', 'value'], _run_rows(summary)))
  config_parts = []
  if inputs.training_config:
    config_parts.append(_html(
        '<details open><summary>Training config ({}, what the trials ran '
        'with)</summary><pre>{}</pre></details>', records.CONFIG_FILE,
        inputs.training_config))
  if summary.get('operative_config'):
    config_parts.append(_html(
        '<details><summary>Estimator config (operative gin of the estimate '
        'binary)</summary><pre>{}</pre></details>',
        _fmt(summary.get('operative_config'))))
  sections.add('config', 'Config', _join(config_parts, '\n')
               or _html('<p class="note">No config found.</p>'))

  # Memorization histogram (with the ablation's variants overlaid).
  variants = _ablation_memorization(workdir, log)
  histogram = _histogram(files, inputs, variants)
  if histogram:
    caption = ('Memorization estimates of all training examples'
               + (', full network against the ablation\'s retrained top '
                  '(same subset masks, everything below frozen at a reference '
                  'model)' if variants else '') + '.')
    body = _figure_html(histogram, 'memorization histogram', caption)
  else:
    body = _html('<p class="note">No example has a memorization estimate.</p>')
  ablation_png = (None if variants else
                  _copy(estimates_dir, files, 'ablation_histogram.png'))
  if ablation_png:
    body += _figure_html(ablation_png, 'ablation histogram',
                         'The ablation\'s histogram (its records were not '
                         'found to redraw it).')
  sections.add('memorization-histogram', 'Memorization histogram', body)

  note = (_Html() if images.available else
          _html('<p class="note">{}</p>', images.note or 'No images.'))
  shown_classes = (f'{len(classes)} of {_text(dataset.get("num_classes"))} '
                   'classes (those whose top examples are the most memorized)'
                   if len(classes) < len(top) else 'every class')
  legend = ('Caption: the label trained on and memorization ± standard '
            'error. Red border: a flipped label (label 3 (was 5): trained as '
            '3, originally 5).')
  for section_id, title, name, chosen, what in (
      ('most-memorized', 'Most memorized examples', 'most_memorized.png', top,
       f'The up to {PER_CLASS} training examples of each class with the '
       'highest memorization (ties: the smaller standard error first)'),
      ('least-memorized', 'Least memorized (typical) examples',
       'least_memorized.png', bottom,
       f'The up to {PER_CLASS} training examples of each class with the '
       'lowest memorization (negative estimates count as 0; ties: the highest '
       'held-out accuracy first), for contrast')):
    rows = [(_class_title(images, c),
             [_memorization_cell(inputs, images, i) for i in chosen.get(c, [])])
            for c in classes if chosen.get(c)]
    if not rows:
      sections.add(section_id, title,
                   _html('<p class="note">No example has an estimate.</p>'))
      continue
    _grid(files, name, rows)
    indices = [i for c in classes for i in chosen.get(c, [])]
    flipped_drawn += int(inputs.flipped[indices].sum())
    sections.add(section_id, title, note + _figure_html(
        name, title, f'{what}; {shown_classes}. {legend}') +
                 _examples_table(inputs, indices))

  # High-influence pairs.
  if pair_rows:
    rows, table = [], []
    pairs_found = len(inputs.pairs['train']) > 0
    for j, entries in pair_rows:
      cells = [{'image': images.test(j),
                'lines': [f'test #{j}', f'label {int(inputs.test_labels[j])}']}]
      for i, value, stderr, is_pair in entries:
        cells.append({
            'image': images.train(i), 'flipped': bool(inputs.flipped[i]),
            'highlight': is_pair,
            'lines': [_label_text(inputs, i),
                      f'infl {value:.2f}' + (f' ± {stderr:.2f}'
                                             if stderr is not None else '')]})
        flipped_drawn += int(inputs.flipped[i])
        table.append([j, inputs.test_ids[j], int(inputs.test_labels[j]),
                      int(i), inputs.train_ids[i], _label_html(inputs, i),
                      _fmt(value) if stderr is None else
                      _html('{} ± {}', _fmt(value), _fmt(stderr)),
                      _fmt(inputs.memorization[i]), _fmt(is_pair)])
      rows.append((f'test #{j}', cells))
    _grid(files, 'influence_pairs.png', rows, title_width=0, gap_after=1)
    thresholds = summary.obj('pair_thresholds')
    influence, memorization = (_text(thresholds.get(key), None)
                               for key in ('influence', 'memorization'))
    if pairs_found:
      what = (f'The {len(pair_rows)} test examples with the most influential '
              f'high-influence pairs (influence ≥ {influence}, memorization ≥ '
              f'{memorization}'
              + (', same label' if thresholds.get('same_label') else '') +
              f'; {_text(summary.get("num_pairs"))} pairs in all), each beside '
              f'its up to {PER_TEST} most influential training examples. Blue '
              'border: a pair over the thresholds (± its standard error).')
    else:
      what = (f'No pair passes the thresholds (influence ≥ {influence}, '
              f'memorization ≥ {memorization}); shown instead: the '
              f'{len(pair_rows)} test examples with the largest influence of '
              'any training example, beside their most influential training '
              'examples.')
    body = (note + _figure_html('influence_pairs.png', 'influence pairs',
                                what + ' Red border: a flipped label.') +
            _html('<details><summary>The pairs shown, as a table</summary>{}'
                  '</details>', _table(
                      ['test index', 'test tfds id', 'test label',
                       'train index', 'train tfds id', 'train label',
                       'influence', 'memorization', 'over thresholds'], table,
                      numeric=(0, 3, 6, 7))))
  else:
    body = _html('<p class="note">No influence estimates to show (no pair over '
                 'the thresholds and Estimator.topk = 0).</p>')
  sections.add('influence-pairs', 'High-influence pairs', body)

  # Experiments.
  ran = set(summary.obj('experiments').keys())
  shown = set()

  def earlier(kind):
    return (_Html() if kind in ran else
            _html('<p class="note">From an earlier run of the estimate binary '
                  '(this summary lists no such experiment).</p>'))

  removal = _read_json(os.path.join(estimates_dir, 'removal.json'), workdir)
  if removal:
    shown.add('removal')
    body = earlier('removal')
    body += _embed_copy(estimates_dir, files, 'removal.png', 'removal curve',
                        'Test accuracy after removing memorized vs random '
                        'training examples (mean ± std).')
    sections.add('removal', _EXPERIMENTS['removal'],
                 body + _removal_section(removal))

  noise = summary.obj('label_noise')
  if noise:
    body = _html('<p>{} training labels were flipped before training. Ranking '
                 'the examples by memorization finds them with ROC AUC '
                 '<b>{}</b>; precision among the {} most memorized: {}.</p>',
                 _fmt(noise.get('num_flipped')), _fmt(noise.get('auc'), 3),
                 _fmt(noise.get('num_flipped_estimable')),
                 _fmt(noise.get('precision_at_flipped'), 3))
    body += _embed_copy(estimates_dir, files,
                        'label_noise_roc.png', 'ROC curve',
                        'ROC curve of memorization as a detector of '
                        'flipped labels.')
    if len(flipped_shown):
      cells = [_memorization_cell(inputs, images, i) for i in flipped_shown]
      rows = [('', cells[s:s + PER_CLASS])
              for s in range(0, len(cells), PER_CLASS)]
      _grid(files, 'flipped.png', rows, title_width=0)
      flipped_drawn += len(flipped_shown)
      body += (note + _figure_html(
          'flipped.png', 'flipped labels',
          f'The {len(flipped_shown)} flipped examples with the highest '
          'memorization. ' + legend) +
               _examples_table(inputs, flipped_shown))
    sections.add('label-noise', 'Label-noise detection', body)

  loo = _read_json(os.path.join(estimates_dir, 'leave_one_out.json'), workdir)
  if loo:
    shown.add('leave_one_out')
    body = earlier('leave_one_out') + _html(
        '<p>{} examples, each left out of {} models trained on the full set: '
        'Spearman {}, Pearson {}, mean |difference| {}.</p>',
        len(loo.array('examples')), _fmt(loo.get('repeats')),
        _fmt(loo.get('spearman'), 3), _fmt(loo.get('pearson'), 3),
        _fmt(loo.get('mean_abs_difference'), 3))
    body += _embed_copy(estimates_dir, files,
                        'leave_one_out.png', 'estimate vs leave-one-out',
                        'Subsampled estimate against direct '
                        'leave-one-out memorization (± standard error).')
    sections.add('leave-one-out', _EXPERIMENTS['leave_one_out'], body)

  ablation = _read_json(os.path.join(estimates_dir, 'ablation.json'), workdir)
  if ablation:
    shown.add('ablation')
    rows = [[_fmt(v.get('variant')), _fmt(v.get('mean_test_accuracy')),
             _fmt(v.get('memorized_025')), _fmt(v.get('num_pairs'))]
            for v in ablation.objs('variants')]
    sections.add('ablation', _EXPERIMENTS['ablation'], earlier('ablation') + (
        _html('<p>On the first {} subset masks; the histogram above overlays '
              'the variants.</p>', _fmt(ablation.get('trials_used')))) + _table(
                  ['variant', 'mean test accuracy', 'memorization ≥ 0.25',
                   'high-influence pairs'], rows, numeric=(1, 2, 3)))

  sweep = _read_json(os.path.join(estimates_dir, 'ratio_sweep.json'), workdir)
  if sweep:
    shown.add('ratio_sweep')
    header = ['subset_ratio', 'effective_ratio', 'trials',
              'mean_test_accuracy', 'examples_memorization_ge_0.25',
              'median_stderr', 'mean_stderr', 'spearman_with_main',
              'lemma_2_1_bound']
    rows = [[_fmt(entry.get(h), 3) for h in header]
            for entry in sweep.objs('table')]
    sections.add('ratio-sweep', _EXPERIMENTS['ratio_sweep'],
                 earlier('ratio_sweep') + _table(
                     [h.replace('_', ' ') for h in header], rows,
                     numeric=tuple(range(len(header)))))

  not_run = _not_run_section(summary, shown)
  if not_run:
    sections.add('not-run', 'Not run', not_run)

  title = _html('Memorization report: {}', _fmt(dataset.get('name')))
  page = _join([
      _html('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">'
            '\n<meta name="viewport" content="width=device-width, '
            'initial-scale=1">'),
      _html('<title>{}</title>\n<style>{}</style>\n</head>\n<body>', title,
            _Html(_CSS)),
      _html('<h1>{}</h1>', title),
      _html('<p class="note">{} trials, built {} from {}.</p>',
            _fmt(summary.get('num_trials')),
            time.strftime('%Y-%m-%d %H:%M:%S %Z'), estimates_dir),
      sections.nav(), sections.html(), _html('</body>\n</html>\n')], '\n')
  return page, files, sections, images, flipped_drawn


def define_flags():
  """Defines the flags; only when run as a binary."""
  flags.DEFINE_string('workdir', None, 'A workdir with estimates.')
  flags.DEFINE_string('output_dir', None,
                      'The report folder (default WORKDIR/report).')
  flags.DEFINE_string('estimates_dir', None,
                      'The estimates (default WORKDIR/estimates).')
  flags.DEFINE_multi_string(
      'gin_bindings', [], 'Bindings after the workdir\'s config, e.g. '
      '"load_dataset.data_dir = \'/data/tfds\'".')
  flags.DEFINE_string(
      'data_dir', None, 'tfds data dir of the images (same as binding '
      'load_dataset.data_dir; a workdir\'s own config never chooses it).')


def _main():
  f = flags.FLAGS
  if not f.workdir:
    raise cli.UserError('--workdir is required: a workdir with estimates.')
  bindings = list(f.gin_bindings)
  if f.data_dir:
    bindings.append(f'load_dataset.data_dir = {f.data_dir!r}')
  report = build(f.workdir, f.output_dir, f.estimates_dir,
                 gin_bindings=bindings,
                 log=lambda line: print(line, flush=True))
  print(f'Report: {report.path} ({report.seconds:.1f}s)', flush=True)


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)
