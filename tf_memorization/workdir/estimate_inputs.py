"""The report's inputs: W/estimates and W/dataset.npz, read as untrusted input.

A workdir may be shared or come from someone else, so every file read here
may hold anything: a value the report cannot use (a list where an object
belongs, a CSV cell that is no number, an index out of range) is one
errors.UserError naming the file and the fix, raised before anything of the
report is written.

  * load: what the estimate binary wrote (summary.json, memorization.csv,
    influence_pairs.csv, influence_topk.npz) and the dataset's labels and
    ids, as an estimates.Estimates; used when the report runs alone (the
    estimator hands its Estimates in memory).
  * Json / read_json: a JSON object whose values are checked where they are
    used (summary.json, the experiments' removal.json, ...).
  * training_config, copy_figure, ablation_memorization: the workdir's
    config text, an experiment's PNG, the ablation's records.
  * choose: the examples the report shows (the grids' most and least
    memorized, the influence pairs, the flipped labels).
"""

import array
import csv
import dataclasses
import io
import os
import re

import numpy as np

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.stats import scores
from tf_memorization.workdir import estimates as estimates_lib
from tf_memorization.workdir import loading
from tf_memorization.workdir import records


def gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def exists(path):
  return gfile().exists(path)


def read_text(path, on_error='strict'):
  """The UTF-8 text of file `path` (`on_error`: 'replace' shows undecodable
  bytes replaced; 'strict' makes them a UserError)."""
  with gfile().GFile(path, 'rb') as f:
    payload = f.read()
  try:
    return payload.decode('utf-8', on_error)
  except UnicodeDecodeError as e:
    raise errors.UserError(f'{path} is not UTF-8 text ({e}): it was altered '
                           'or not written by this package. Run the binary '
                           'that wrote it again.') from e


def rerun(workdir):
  return ('Run the estimate binary again to rewrite it (python -m '
          f'tf_memorization.estimate --workdir={workdir}).')


class Json:
  """A JSON object of an estimates file, read as untrusted input.

  A workdir may be shared or come from someone else, so any value may have any
  type: a nested object or list is checked when it is used (a UserError
  naming the file and the key otherwise, not an AttributeError deep in the
  report), and leaves come back as they are, of whatever type, for
  report_html.fmt and escape to show.
  """

  def __init__(self, value, path, workdir, where=''):
    self.value, self._path, self._workdir = value, path, workdir
    self._where = where

  def _error(self, key, kind, value):
    return errors.UserError(
        f'{self._path}: {self._where}{key} is a JSON {_json_type(value)} '
        f'where the estimate binary writes {kind}: the file was altered or '
        f'not written by this version of it. {rerun(self._workdir)}')

  def __bool__(self):
    return bool(self.value)

  def get(self, key, default=None):
    """A leaf (any JSON value)."""
    return self.value.get(key, default)

  def keys(self):
    return self.value.keys()

  def items(self):
    return self.value.items()

  def obj(self, key):
    """The object at `key` (empty when absent or null)."""
    value = self.value.get(key)
    if value is None:
      value = {}
    if not isinstance(value, dict):
      raise self._error(key, 'an object', value)
    return Json(value, self._path, self._workdir, f'{self._where}{key}.')

  def array(self, key):
    """The list at `key` (empty when absent or null), its items leaves."""
    value = self.value.get(key)
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
      out.append(Json(value, self._path, self._workdir,
                      f'{self._where}{key}[{number}].'))
    return out


def _json_type(value):
  for kind, name in ((dict, 'object'), (list, 'list'), (str, 'string'),
                     (bool, 'boolean'), ((int, float), 'number')):
    if isinstance(value, kind):
      return name
  return 'null'


def read_json(path, workdir):
  """The Json of the object in file `path`, or None when there is none."""
  if not exists(path):
    return None
  try:
    value = storage.parse_json(read_text(path), path, rerun(workdir))
  except errors.RecordError as e:  # the report's errors are UserErrors
    raise errors.UserError(str(e)) from e
  if not isinstance(value, dict):
    raise errors.UserError(f'{path} holds a JSON {_json_type(value)}, not the '
                           f'object the estimate binary writes. '
                           f'{rerun(workdir)}')
  return Json(value, path, workdir)


def _csv_error(path, line, workdir, what):
  return errors.UserError(f'{path} line {line}: {what}: the file was altered '
                          'or not written by the estimate binary. '
                          f'{rerun(workdir)}')


def read_csv(path, workdir, float_columns=(), int_columns=()):
  """The named columns of a CSV with a header row, as numpy arrays.

  Values go straight into typed arrays (empty cells: NaN, or -1 in an
  integer column), so the
  memorization table of ImageNet (1.28M rows) costs megabytes, not the
  gigabyte its cells would as Python strings. A cell that is no number (the
  file may come from anyone) is a UserError naming the file, its line and
  column.
  """
  if not exists(path):
    raise errors.UserError(f'{path} is missing. {rerun(workdir)}')
  reader = csv.reader(io.StringIO(read_text(path)))
  try:
    header = next(reader)
  except (StopIteration, csv.Error) as e:
    raise errors.UserError(f'{path} has no header row ({e or "empty"}). '
                           f'{rerun(workdir)}') from e
  missing = [c for c in (*float_columns, *int_columns) if c not in header]
  if missing:
    raise errors.UserError(f'{path} lacks the columns {missing}: it was not '
                           'written by this version of the estimate binary. '
                           'Run it again.')
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


def _is_real(array_):
  return (np.issubdtype(array_.dtype, np.integer) or
          np.issubdtype(array_.dtype, np.floating))


def _header(path):
  """The header row of a CSV file ([] when it has none or is missing: the
  reading that follows names the problem)."""
  if not exists(path):
    return []
  with gfile().GFile(path, 'r') as f:
    line = f.readline()
  try:
    return next(csv.reader([line]))
  except (StopIteration, csv.Error):
    return []


def check_indices(path, workdir, name, indices, low, high):
  """A UserError unless every index is in [low, high) (else the report would
  index the labels with it, or wrap a negative one round silently)."""
  bad = np.flatnonzero((indices < low) | (indices >= high))
  if len(bad):
    raise errors.UserError(
        f'{path}: {name} {int(indices[bad[0]])} is out of range (the workdir '
        f'has {high} such examples): the estimates belong to another workdir '
        f'or were altered. {rerun(workdir)}')


def load(workdir, estimates_dir):
  """The estimates in `estimates_dir` (and W/dataset.npz's labels and ids),
  every value checked: an estimates.Estimates."""
  summary_path = os.path.join(estimates_dir, estimates_lib.SUMMARY_JSON)
  if not exists(summary_path):
    raise errors.UserError(
        f'{summary_path} is missing: run the estimate binary first '
        f'(python -m tf_memorization.estimate --workdir={workdir}).')
  summary = read_json(summary_path, workdir)
  arrays, _ = records.read_dataset_file(workdir)
  dataset_path = os.path.join(workdir, files.DATASET_FILE)
  for name in ('train_labels', 'test_labels', 'original_train_labels'):
    if not np.issubdtype(arrays[name].dtype, np.integer):
      raise errors.UserError(f'{dataset_path}: its {name} are '
                             f'{arrays[name].dtype}, not integers. '
                             f'{records.fix_hint(dataset_path)}')
  mem_path = os.path.join(estimates_dir, estimates_lib.MEMORIZATION_CSV)
  newer = ('qvalue', 'controlled')  # absent from an earlier version's file
  mem_columns = [c for c in newer if c in _header(mem_path)]
  mem = read_csv(mem_path, workdir,
                 ('memorization', 'memorization_stderr', 'consistency',
                  *mem_columns), ('k_in', 'k_out'))
  n, n_test = len(arrays['train_labels']), len(arrays['test_labels'])
  if len(mem['memorization']) != n:
    raise errors.UserError(
        f'{estimates_dir}/{estimates_lib.MEMORIZATION_CSV} has '
        f'{len(mem["memorization"])} rows but {workdir}/'
        f'{files.DATASET_FILE} {n} training examples: the estimates belong '
        'to another workdir. Run the estimate binary again.')
  pairs_path = os.path.join(estimates_dir, estimates_lib.PAIRS_CSV)
  pair_columns = [c for c in ('qvalue', 'raw', 'controlled')
                  if c in _header(pairs_path)]
  pairs = read_csv(pairs_path, workdir, ('influence', 'influence_stderr',
                                         *pair_columns),
                   ('train_index', 'test_index'))
  check_indices(pairs_path, workdir, 'train_index', pairs['train_index'], 0, n)
  check_indices(pairs_path, workdir, 'test_index', pairs['test_index'], 0,
                n_test)
  topk_path = os.path.join(estimates_dir, estimates_lib.TOPK_NPZ)
  if exists(topk_path):
    topk = storage.load_npz(topk_path)
    indices, influence = topk.get('train_indices'), topk.get('influence')
    if (indices is None or influence is None or indices.ndim != 2 or
        indices.shape != influence.shape or len(indices) != n_test or
        not np.issubdtype(indices.dtype, np.integer) or
        not _is_real(influence)):
      raise errors.UserError(
          f'{topk_path} is not an integer train_indices and a real influence '
          f'array of shape [{n_test}, topk] (the test examples of '
          f'{dataset_path}): it was altered or belongs to another workdir. '
          f'{rerun(workdir)}')
    check_indices(topk_path, workdir, 'train index', indices, -1, n)
  else:
    indices = np.zeros((n_test, 0), np.int64)
    influence = np.zeros((n_test, 0), np.float64)
  return estimates_lib.Estimates(
      summary=summary.value,
      memorization=mem['memorization'], stderr=mem['memorization_stderr'],
      consistency=mem['consistency'], k_in=mem['k_in'], k_out=mem['k_out'],
      pairs={'train': pairs['train_index'], 'test': pairs['test_index'],
             'influence': pairs['influence'],
             'stderr': pairs['influence_stderr'],
             **{c: (pairs[c] if c == 'qvalue' else pairs[c] == 1)
                for c in pair_columns}},
      qvalue=mem.get('qvalue'),
      controlled=(mem['controlled'] == 1 if 'controlled' in mem else None),
      topk_indices=np.asarray(indices, np.int64),
      topk_influence=np.asarray(influence, np.float64),
      train_labels=arrays['train_labels'],
      original_train_labels=arrays['original_train_labels'],
      test_labels=arrays['test_labels'],
      train_ids=arrays['train_ids'], test_ids=arrays['test_ids'])


def training_config(workdir):
  """W/operative_config.gin's text ('' when there is none). Shown, not
  parsed here: undecodable bytes are shown replaced."""
  path = os.path.join(workdir, files.CONFIG_FILE)
  return read_text(path, on_error='replace') if exists(path) else ''


def copy_figure(estimates_dir, files, name):
  """Copies an experiment's PNG `name` (one of estimates.FIGURES) into the
  report's `files`; its name, or None when it is not there."""
  source = os.path.join(estimates_dir, name)
  if not exists(source):
    return None
  with gfile().GFile(source, 'rb') as f:
    files[name] = f.read()
  return name


def ablation_memorization(workdir, log):
  """[(variant name, number of trials, memorization [n])] of the ablation."""
  pattern = os.path.join(workdir, files.EXPERIMENTS_DIR, 'ablation_last*')
  found = []
  for directory in sorted(gfile().glob(pattern)):
    match = re.search(r'ablation_last(\d+)$', directory.rstrip('/'))
    if not match or not records.list_records(directory):
      continue
    blocks = int(match.group(1))
    try:
      loaded = loading.load(directory, margins=False)
    except errors.RecordError as e:
      log(f'Report: the ablation records in {directory} are unreadable ({e}); '
          'the histogram leaves them out.')
      continue
    mem = scores.memorization(loaded.masks, loaded.train_correct)
    name = ('last layer only' if blocks == 0 else
            f'last {blocks} blocks + head')
    found.append((blocks, name, loaded.num_trials, mem.memorization))
  return [f[1:] for f in sorted(found)]


# --------------------------------------------------------------------------
# Choosing the examples shown


@dataclasses.dataclass
class Chosen:
  """The examples the report shows (indices of an estimates.Estimates)."""
  flipped: np.ndarray        # bool [n]: the training label was flipped
  classes: list              # the classes of the example grids
  top: dict                  # {class: its most memorized examples}
  bottom: dict               # {class: its least memorized examples}
  pair_rows: list            # pair_rows: the test examples most influenced
  flipped_shown: np.ndarray  # the flipped examples of the label-noise section

  def train_indices(self):
    """The training examples shown anywhere, sorted."""
    needed = set(self.flipped_shown.tolist())
    for c in self.classes:
      needed.update(self.top[c])
      needed.update(self.bottom.get(c, []))
    for _, entries in self.pair_rows:
      needed.update(i for i, *_ in entries)
    return sorted(needed)

  def test_indices(self):
    """The test examples shown, sorted."""
    return sorted(j for j, _ in self.pair_rows)


def choose(inputs, num_per_class, max_classes, max_tests, per_test,
           max_flipped):
  """The Chosen examples of `inputs` (an estimates.Estimates): per class the
  `num_per_class` most and least memorized (of `max_classes` classes), the
  `max_tests` test examples most influenced with `per_test` training
  examples each, the `max_flipped` most memorized flipped examples."""
  classes, top, bottom = example_grids(inputs, num_per_class, max_classes)
  flipped = inputs.train_labels != inputs.original_train_labels
  shown = np.flatnonzero(flipped)
  shown = shown[np.lexsort((shown, -np.nan_to_num(
      inputs.memorization[shown], nan=-np.inf)))][:max_flipped]
  return Chosen(flipped, classes, top, bottom,
                pair_rows(inputs, max_tests, per_test), shown)


def per_class(order, labels, num_per_class):
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


def example_grids(inputs, num_per_class, max_classes):
  """(classes, most memorized per class, least memorized per class)."""
  mem = inputs.memorization
  defined = np.flatnonzero(np.isfinite(mem))
  most = defined[np.lexsort((defined, inputs.stderr[defined], -mem[defined]))]
  # Typical: the lowest memorization (negative estimates count as 0), ties to
  # the examples most often right when held out.
  consistency = np.nan_to_num(inputs.consistency[defined], nan=-1.0)
  least = defined[np.lexsort((defined, -consistency,
                              np.maximum(mem[defined], 0.0)))]
  top = per_class(most, inputs.train_labels, num_per_class)
  bottom = per_class(least, inputs.train_labels, num_per_class)
  classes = sorted(top)
  if len(classes) > max_classes:  # the classes that memorize the most
    score = {c: float(np.mean(mem[top[c]])) for c in classes}
    classes = sorted(classes, key=lambda c: (-score[c], c))[:max_classes]
  return classes, top, bottom


def pair_rows(inputs, max_tests, per_test):
  """[(test index, [(train index, influence, stderr or None, is_pair)])]."""
  pairs = inputs.pairs
  by_test = {}
  for i, j, value, stderr in zip(pairs['train'], pairs['test'],
                                 pairs['influence'], pairs['stderr']):
    by_test.setdefault(int(j), {})[int(i)] = (float(value), float(stderr),
                                              True)
  topk, influence = inputs.topk_indices, inputs.topk_influence
  controlled = inputs.controlled_pairs()
  if by_test:
    # The test examples with a controlled pair first (what can be trusted).
    with_controlled = {j for _, j in controlled}
    order = sorted(by_test, key=lambda j: (j not in with_controlled,
                                           -max(v[0] for v in
                                                by_test[j].values()), j))
  elif topk.shape[1]:  # no pair: the largest top-1 influences
    top1 = influence[:, 0]
    valid = np.flatnonzero(np.isfinite(top1) & (topk[:, 0] >= 0))
    order = valid[np.lexsort((valid, -top1[valid]))].tolist()
  else:
    order = []
  rows = []
  for j in order[:max_tests]:
    entries = dict(by_test.get(j, {}))
    if topk.shape[1]:
      for i, value in zip(topk[j], influence[j]):
        if i >= 0 and np.isfinite(value) and int(i) not in entries:
          entries[int(i)] = (float(value), None, False)
    # Best first; at equal influence the pairs over the thresholds first.
    ranked = sorted(entries.items(), key=lambda e: (-e[1][0], not e[1][2],
                                                    e[0]))
    rows.append((j, [(i, *v) for i, v in ranked[:per_test]]))
  return rows
