"""Tests of the HTML report (tf_memorization.report) on real runs of the digits.

Two small workdirs of gin_configs/tiny.gin (4 trials, 1 epoch) are trained
once with the real train binary's run(): one clean, one with 10% label noise.
The estimate binary runs on the noisy one as a subprocess (with tiny removal,
ablation and leave-one-out experiments), started as soon as its trials exist,
while the clean one trains and is estimated in process; both build their
report at the end. The tests read the reports: every image is a PNG inside the
report folder, nothing points outside it, the sections are there, flipped
labels are marked. The report is also built on its own (page.build) from a
copy of the clean workdir.
"""

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.reporting import images as images_lib
from tf_memorization.reporting import page as page_lib
from tf_memorization import train
from tf_memorization.workdir import estimate_inputs
from tf_memorization.workdir import records
from tf_memorization.workdir import signatures

from conftest import GIN_DIR, REPO

pytestmark = pytest.mark.slow  # trains real runs; see conftest

NUM_TRIALS = 4
TRAIN_BINDINGS = [f'SubsetDesign.num_trials = {NUM_TRIALS}',
                  'TrialTrainer.epochs = 1', "get_strategy.kind = 'one_device'"]
NOISE_BINDINGS = ['label_noise.fraction = 0.1', 'label_noise.seed = 1']
EXPERIMENT_BINDINGS = [
    "Estimator.experiments = ('removal', 'ablation', 'leave_one_out')",
    'RemovalExperiment.thresholds = (0.5,)', 'RemovalExperiment.repeats = 1',
    'AblationExperiment.max_trials = 2',
    'LeaveOneOutExperiment.per_group = 1', 'LeaveOneOutExperiment.repeats = 1',
    'LeaveOneOutExperiment.target_stderr = None',
]
HEADINGS = ('Run', 'Config', 'Memorization histogram', 'Most memorized',
            'Least memorized', 'High-influence pairs')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _train(path, bindings, data_dir):
  summary = train.run(path, [os.path.join(GIN_DIR, 'tiny.gin')],
                      TRAIN_BINDINGS + bindings, data_dir=data_dir,
                      log=lambda _: None)
  gin.clear_config()
  assert summary.trained == list(range(NUM_TRIALS))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, digits_data_dir, tiny_workdir):
  """{'noisy': (workdir, stdout), 'clean': (workdir, logged lines)}; the
  clean run is a copy of the session's tiny workdir (TRAIN_BINDINGS and
  the held-out probabilities recorded)."""
  from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('report')
  noisy, clean = str(root / 'noisy'), str(root / 'clean')
  _train(noisy, NOISE_BINDINGS, digits_data_dir)
  command = [sys.executable, '-m', 'tf_memorization.estimate',
             f'--workdir={noisy}'] + [f'--gin_bindings={b}'
                                      for b in EXPERIMENT_BINDINGS]
  proc = subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  try:
    shutil.copytree(tiny_workdir, clean)
    lines = []
    try:
      pipeline.run(clean, log=lines.append)
    finally:
      gin.clear_config()
    out, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:  # only after an error
      proc.kill()
      proc.communicate()
  assert proc.returncode == 0, err[-3000:]
  assert 'Traceback' not in err
  return {'noisy': (noisy, out.splitlines()), 'clean': (clean, lines)}


class _Parser(html.parser.HTMLParser):
  """Tags with their attributes, headings, and the text of the page."""

  def __init__(self):
    super().__init__()
    self.tags, self.headings, self.text = [], [], []
    self._heading = None

  def handle_starttag(self, tag, attrs):
    self.tags.append((tag, dict(attrs)))
    if tag in ('h1', 'h2', 'h3'):
      self._heading = []

  def handle_endtag(self, tag):
    if tag in ('h1', 'h2', 'h3') and self._heading is not None:
      self.headings.append(''.join(self._heading).strip())
      self._heading = None

  def handle_data(self, data):
    self.text.append(data)
    if self._heading is not None:
      self._heading.append(data)


def _parse(report_dir):
  with open(os.path.join(report_dir, 'index.html'), encoding='utf-8') as f:
    page = f.read()
  parser = _Parser()
  parser.feed(page)
  parser.close()
  return page, parser


def _report_dir(runs, name):
  return os.path.join(runs[name][0], 'report')


def _section_ids(parser):
  return [a.get('id') for tag, a in parser.tags if tag == 'section']


def test_the_binary_prints_the_report_path_last(runs):
  workdir, stdout = runs['noisy']
  assert stdout[-1] == f'Report: {workdir}/report/index.html'
  workdir, lines = runs['clean']
  assert lines[-1] == f'Report: {workdir}/report/index.html'
  assert os.path.isfile(os.path.join(workdir, 'report', 'index.html'))


def _check_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE, path
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image.verify()
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  pixels = matplotlib.image.imread(path)
  assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50, (path, pixels.shape)


def _check_inside(reference):
  assert reference, 'an empty link'
  assert 'http' not in reference.lower() and '//' not in reference
  assert ':' not in reference, reference  # no scheme, no drive letter
  assert not reference.startswith(('/', '\\')), reference
  assert '..' not in reference.replace('\\', '/').split('/'), reference


@pytest.mark.parametrize('name', ['clean', 'noisy'])
def test_every_image_is_a_png_inside_the_report_folder(runs, name):
  report_dir = _report_dir(runs, name)
  _, parser = _parse(report_dir)
  sources = [a.get('src') for tag, a in parser.tags if tag == 'img']
  assert len(sources) >= 4
  for src in sources:
    _check_inside(src)
    path = os.path.join(report_dir, src)
    assert os.path.realpath(path).startswith(os.path.realpath(report_dir)
                                             + os.sep)
    assert os.path.isfile(path), src
    _check_png(path)
  # Nothing else in the folder but the page and its images.
  assert sorted(os.listdir(report_dir)) == sorted(set(sources) |
                                                  {'index.html'})


@pytest.mark.parametrize('name', ['clean', 'noisy'])
def test_the_page_references_nothing_outside_its_folder(runs, name):
  page, parser = _parse(_report_dir(runs, name))
  for tag, attrs in parser.tags:
    assert tag not in ('script', 'link', 'iframe', 'object', 'embed', 'base')
    for key in ('src', 'href', 'srcset', 'data', 'action', 'poster'):
      if key in attrs:
        if key == 'href' and attrs[key].startswith('#'):
          continue
        _check_inside(attrs[key])
  ids = set(a.get('id') for _, a in parser.tags)
  for _, attrs in parser.tags:  # in-page links lead somewhere
    if attrs.get('href', '').startswith('#'):
      assert attrs['href'][1:] in ids
  assert 'url(' not in page and '@import' not in page


@pytest.mark.parametrize('name', ['clean', 'noisy'])
def test_the_sections_are_present(runs, name):
  _, parser = _parse(_report_dir(runs, name))
  assert parser.headings[0].startswith('Memorization report: sklearn_digits')
  for heading in HEADINGS:
    assert any(h.startswith(heading) for h in parser.headings), (
        heading, parser.headings)
  for section in ('run', 'config', 'memorization-histogram', 'most-memorized',
                  'least-memorized', 'influence-pairs'):
    assert section in _section_ids(parser)


def test_the_run_figures_come_from_the_summary(runs):
  workdir, _ = runs['clean']
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    summary = json.load(f)
  page, parser = _parse(_report_dir(runs, 'clean'))
  text = ''.join(parser.text)
  for key in ('mean_train_accuracy', 'mean_heldout_accuracy',
              'mean_test_accuracy', 'lemma_2_1_bound'):
    assert f'{summary[key]:.4f}' in text, key
  split = summary['split_half']
  assert f'{split["memorization_pearson"]:.3f}' in text
  assert f'{split["memorization_spearman"]:.3f}' in text
  assert 'trials (k)' in text and 'subset ratio' in text
  # The configs, escaped in <pre>.
  pres = re.findall(r'<pre>(.*?)</pre>', page, flags=re.S)
  assert any('SubsetDesign.num_trials = 4' in p for p in pres)
  assert any('Estimator.topk = 10' in p for p in pres)
  assert 'load_dataset.name = &#x27;sklearn_digits&#x27;' in page
  # No label noise, no experiments: their sections are only listed.
  ids = _section_ids(parser)
  assert 'label-noise' not in ids and 'removal' not in ids
  not_run = page[page.index('id="not-run"'):]
  assert 'label_noise.fraction' in not_run
  assert 'Estimator.experiments = (&#x27;removal&#x27;,)' in not_run
  assert 'class="flipped"' not in page


def test_flipped_labels_are_marked_and_the_roc_is_shown(runs):
  workdir, _ = runs['noisy']
  page, parser = _parse(_report_dir(runs, 'noisy'))
  ids = _section_ids(parser)
  assert 'label-noise' in ids
  assert any(h == 'Label-noise detection' for h in parser.headings)
  sources = [a['src'] for tag, a in parser.tags if tag == 'img']
  assert 'label_noise_roc.png' in sources and 'flipped.png' in sources
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    noise = json.load(f)['label_noise']
  assert f'ROC AUC <b>{noise["auc"]:.3f}</b>' in page
  # Each marked example really was flipped: "label (was original)".
  arrays, _ = records.read_dataset_file(workdir)
  # (Rows of the example tables: index, a train tfds id, label.)
  marked = re.findall(r'<tr><td class="num">(\d+)</td><td>[^<]*-train\.[^<]*'
                      r'</td><td><span class="flipped">(\d+) \(was (\d+)\)'
                      r'</span>', page)
  assert len(marked) >= 16
  for index, label, original in marked:
    assert int(label) == arrays['train_labels'][int(index)]
    assert int(original) == arrays['original_train_labels'][int(index)]
    assert label != original
  # And unflipped examples are not marked.
  plain = re.findall(r'<tr><td class="num">(\d+)</td><td>[^<]*-train\.[^<]*'
                     r'</td><td>(\d+)</td>', page)
  assert plain
  flipped = arrays['train_labels'] != arrays['original_train_labels']
  assert not any(flipped[int(i)] for i, _ in plain)


def test_experiment_sections(runs):
  page, parser = _parse(_report_dir(runs, 'noisy'))
  ids = _section_ids(parser)
  for section in ('removal', 'leave-one-out', 'ablation', 'not-run'):
    assert section in ids, ids
  sources = [a['src'] for tag, a in parser.tags if tag == 'img']
  assert 'removal.png' in sources and 'leave_one_out.png' in sources
  removal = page[page.index('id="removal"'):page.index('id="label-noise"')]
  for condition in ('full', 'memorized', 'random', 'influence_set',
                    'influence_random'):
    assert f'<td>{condition}</td>' in removal
  assert 'Influence set' in removal
  # The histogram overlays the ablation's last-layer-only estimates.
  histogram = page[page.index('id="memorization-histogram"'):
                   page.index('id="most-memorized"')]
  assert 'ablation' in histogram
  assert 'ratio_sweep' in page[page.index('id="not-run"'):]


@pytest.fixture(scope='module')
def standalone(runs, tmp_path_factory):
  """page_lib.build() on its own, on a copy of the clean workdir (odd name)."""
  workdir = str(tmp_path_factory.mktemp('standalone') / 'copy <&> "w"')
  shutil.copytree(runs['clean'][0], workdir)
  shutil.rmtree(os.path.join(workdir, 'report'))
  lines = []
  try:
    built = page_lib.build(workdir, log=lines.append)
  finally:
    gin.clear_config()
  return workdir, built, lines


def test_standalone_build(standalone, runs):
  workdir, built, lines = standalone
  assert built.path == os.path.join(workdir, 'report', 'index.html')
  assert built.images and built.num_flipped_shown == 0
  assert any('images of sklearn_digits' in line for line in lines)
  page, parser = _parse(os.path.join(workdir, 'report'))
  _, from_binary = _parse(_report_dir(runs, 'clean'))
  assert built.sections == _section_ids(parser) == _section_ids(from_binary)
  assert parser.headings == from_binary.headings
  # Text is escaped: the workdir's name reads back as it is.
  assert 'copy &lt;&amp;&gt; &quot;w&quot;' in page
  assert workdir in ''.join(parser.text)
  for tag, attrs in parser.tags:
    if tag == 'img':
      _check_png(os.path.join(workdir, 'report', attrs['src']))


def test_the_report_from_memory_is_the_report_from_the_files(runs, tmp_path):
  """The estimator hands the report its estimates in memory; built alone,
  the report reads them back from the files: the same page, the same PNGs
  (but for the page's build time and the folder it names)."""
  workdir = runs['clean'][0]
  alone = str(tmp_path / 'alone')
  try:
    page_lib.build(workdir, alone, log=lambda _: None)
  finally:
    gin.clear_config()
  in_memory = _report_dir(runs, 'clean')
  assert sorted(os.listdir(alone)) == sorted(os.listdir(in_memory))
  built_line = re.compile(r'<p class="note">[^<]* trials, built [^<]*</p>')
  for name in os.listdir(alone):
    with open(os.path.join(alone, name), 'rb') as a, open(
        os.path.join(in_memory, name), 'rb') as b:
      ours, theirs = a.read(), b.read()
    if name == 'index.html':
      ours, theirs = (built_line.sub('', x.decode()) for x in (ours, theirs))
    assert ours == theirs, name


def test_without_images_the_report_still_builds(runs, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(runs['clean'][0], workdir)
  try:
    built = page_lib.build(
        workdir, output_dir=str(tmp_path / 'out'), log=lambda _: None,
        gin_bindings=["load_dataset.name = 'mnist'",
                      'load_dataset.download = False',
                      f"load_dataset.data_dir = '{tmp_path / 'empty'}'"])
  finally:
    gin.clear_config()
  assert not built.images
  page, parser = _parse(str(tmp_path / 'out'))
  assert 'could not be read here' in page
  for heading in HEADINGS:
    assert any(h.startswith(heading) for h in parser.headings)


def test_report_off_and_report_dir(runs, tmp_path):
  from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'w')
  shutil.copytree(runs['clean'][0], workdir)
  shutil.rmtree(os.path.join(workdir, 'report'))
  lines = []
  try:
    pipeline.run(workdir, gin_bindings=['Estimator.report = False'],
                 log=lines.append)
  finally:
    gin.clear_config()
  assert not os.path.exists(os.path.join(workdir, 'report'))
  assert not any(line.startswith('Report:') for line in lines)
  elsewhere = str(tmp_path / 'elsewhere')
  lines = []
  try:
    pipeline.run(workdir,
                 gin_bindings=[f"Estimator.report_dir = '{elsewhere}'"],
                 log=lines.append)
  finally:
    gin.clear_config()
  assert lines[-1] == f'Report: {elsewhere}/index.html'
  assert os.path.isfile(os.path.join(elsewhere, 'index.html'))
  assert not os.path.exists(os.path.join(workdir, 'report'))


def test_read_examples_by_tfds_id(digits_data_dir):
  """The streaming path (ImageNet's) on the digits, against the arrays."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tf_memorization.data import pipelines  # pylint: disable=g-import-not-at-top
  dataset = pipelines.load_dataset(name='sklearn_digits',
                                   data_dir=digits_data_dir)
  builder = tfds.builder('sklearn_digits', data_dir=digits_data_dir)
  for split, indices in ((dataset.train, [0, 7, 500, 1441]),
                         (dataset.test, [3, 354])):
    found = images_lib.read_examples(builder, split.tfds_split, indices,
                                     split.ids, size=8)
    assert sorted(found) == indices
    for i in indices:
      np.testing.assert_array_equal(found[i], split.images[i])
  # Thumbnails: a central square, resized.
  found = images_lib.read_examples(builder, 'train', [5],
                                   dataset.train.ids, size=64)
  assert found[5].shape == (64, 64, 1) and found[5].dtype == np.uint8
  # A split given as a slice expression is scanned, filtered by id.
  found = images_lib.read_examples(builder, 'train[:50%]', [2],
                                   dataset.train.ids, size=8)
  np.testing.assert_array_equal(found[2], dataset.train.images[2])


def test_per_class_keeps_the_order_within_each_class():
  labels = np.array([1, 0, 1, 0, 1, 2])
  assert estimate_inputs.per_class([4, 3, 2, 1, 0, 5], labels, 2) == {
      1: [4, 2], 0: [3, 1], 2: [5]}
  assert estimate_inputs.per_class([], labels, 2) == {}


# --------------------------------------------------------------------------
# Hostile workdirs: every value that reaches the page is escaped

_ATTACK = ('<script>alert(1)</script>"><img src=x onerror=alert(1)></style>'
           "'><a href=javascript:alert(1)>javascript:alert(1) & &amp; "
           r'$\foo$ $x^$')


class _Hostile:
  """Hands out hostile strings, each tagged so it can be found in the page."""

  def __init__(self):
    self.tags = {}  # tag: where the string was written

  def __call__(self, where):
    tag = f'H{len(self.tags)}H'
    self.tags[tag] = where
    return tag + _ATTACK

  def replace_leaves(self, value, where, keep=(), keys=()):
    """`value` with every string, number and null replaced by a hostile
    string (lists and objects kept), but for the object keys in `keep`;
    the keys of the objects at the paths in `keys` become hostile too."""
    if isinstance(value, dict):
      return {(self(f'{where} key') if where in keys else k):
              (v if k in keep else
               self.replace_leaves(v, f'{where}.{k}', keep, keys))
              for k, v in value.items()}
    if isinstance(value, list):
      return [self.replace_leaves(v, f'{where}.{i}', keep, keys)
              for i, v in enumerate(value)]
    return self(where)


def _rewrite_json(path, change):
  with open(path) as f:
    value = json.load(f)
  with open(path, 'w') as f:
    json.dump(change(value), f)


def _rewrite_csv(path, columns, hostile):
  """Replaces the cells of `columns` (and adds a hostile column)."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  header = rows[0]
  wanted = [header.index(c) for c in columns]
  name = os.path.basename(path)
  out = [header + [hostile(f'csv {name} header')]]
  for number, row in enumerate(rows[1:]):
    for column in wanted:
      row[column] = hostile(f'csv {name} {header[column]} row {number}')
    out.append(row + [hostile(f'csv {name} extra cell {number}')])
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows(out)


def _rewrite_dataset_ids(workdir, hostile):
  """Hostile tfds ids in W/dataset.npz, its checksum recomputed as
  records.write_dataset_file computes it."""
  path = os.path.join(workdir, files.DATASET_FILE)
  arrays = storage.load_npz(path)
  info = json.loads(str(arrays.pop('info')))
  for split in ('train', 'test'):
    ids = [f'{split}id{i}{_ATTACK}'
           for i in range(len(arrays[f'{split}_ids']))]
    arrays[f'{split}_ids'] = np.asarray(ids).astype(str)
  # The source ids have a checksum of their own, as the writer keeps them.
  sources = {f: arrays.pop(f) for f in ('train_source_ids', 'test_source_ids')
             if f in arrays}
  info['checksum'] = signatures.arrays_digest(arrays)
  arrays.update(sources)
  arrays['info'] = np.array(json.dumps(info, sort_keys=True))
  with open(path, 'wb') as f:
    f.write(storage.npz_bytes(arrays))
  records.read_dataset_file(workdir)  # the report's reader accepts it


# Where the page shows the hostile strings written (the others it does not
# read, or only into a figure, or in a removal row of no known condition).
_SHOWN = re.compile('|'.join([
    r'summary\.dataset\.(name|version|num_classes|image_shape\..*)',
    r'summary\.design.*', r'summary\.memorization_counts.*',
    r'summary\.(num_train|num_test|num_trials|subset_ratios\..*|'
    r'mean_(train|heldout|test)_accuracy|lemma_2_1_bound|split_half\..*|'
    r'undefined_memorization|(median|max)_memorization_stderr|'
    r'max_stderr_of_memorized|pair_thresholds\..*|num_pairs|'
    r'memorization_vs_influence\..*|influence_scores|fingerprint|workdir|'
    r'operative_config)',
    r'summary\.label_noise\.(num_flipped|auc|num_flipped_estimable|'
    r'precision_at_flipped)',
    r'removal\.(repeats|num_influenced_test_examples|table\..*)',
    r'ablation\.(trials_used|variants\.\d+\.(variant|mean_test_accuracy|'
    r'memorized_025|num_pairs))',
    r'leave_one_out\.(repeats|spearman|pearson|mean_abs_difference)',
    r'ratio_sweep\.table\..*', r'operative_config\.gin']))


@pytest.fixture()
def hostile_workdir(runs, tmp_path):
  """A copy of the noisy workdir (all experiments) whose estimates, ids and
  config hold hostile strings; (workdir, the _Hostile that wrote them)."""
  workdir = str(tmp_path / 'w')
  shutil.copytree(runs['noisy'][0], workdir)
  shutil.rmtree(os.path.join(workdir, 'report'))
  estimates = os.path.join(workdir, 'estimates')
  hostile = _Hostile()
  _rewrite_json(os.path.join(estimates, 'summary.json'),
                lambda s: hostile.replace_leaves(
                    s, 'summary', keys=('summary.design',
                                        'summary.memorization_counts')))
  # Conditions pick the rows of the removal tables: kept, and one more row.
  def removal(value):
    value = hostile.replace_leaves(value, 'removal', keep=('condition',))
    value['table'].append(hostile.replace_leaves(value['table'][0],
                                                 'removal.extra'))
    return value
  _rewrite_json(os.path.join(estimates, 'removal.json'), removal)
  for name in ('ablation', 'leave_one_out', 'label_noise',
               'memorization_vs_influence'):
    _rewrite_json(os.path.join(estimates, f'{name}.json'),
                  lambda v, name=name: hostile.replace_leaves(v, name))
  header = ['subset_ratio', 'effective_ratio', 'trials', 'mean_test_accuracy',
            'examples_memorization_ge_0.25', 'median_stderr', 'mean_stderr',
            'spearman_with_main', 'lemma_2_1_bound']
  with open(os.path.join(estimates, 'ratio_sweep.json'), 'w') as f:
    json.dump(hostile.replace_leaves(
        {'main_subset_ratio': 0.5, 'table': [dict.fromkeys(header, 0.5)] * 2},
        'ratio_sweep'), f)
  _rewrite_csv(os.path.join(estimates, 'memorization.csv'), ('id', 'label'),
               hostile)
  _rewrite_csv(os.path.join(estimates, 'influence_pairs.csv'),
               ('train_id', 'test_id', 'label', 'memorization'), hostile)
  _rewrite_dataset_ids(workdir, hostile)
  with open(os.path.join(workdir, files.CONFIG_FILE), 'a') as f:
    f.write(f'# {hostile("operative_config.gin")}\n')
  return workdir, hostile


_ALLOWED_ATTRIBUTES = {'lang', 'charset', 'name', 'content', 'id', 'href',
                       'src', 'alt', 'class', 'open'}


def test_hostile_estimates_are_escaped(hostile_workdir, monkeypatch):
  workdir, hostile = hostile_workdir
  load_images = images_lib.load_images

  def hostile_class_names(*args):  # into the grids' row titles (matplotlib)
    images = load_images(*args)
    images.class_names = [hostile(f'class name {c}') for c in range(10)]
    return images

  monkeypatch.setattr(images_lib, 'load_images', hostile_class_names)
  try:
    built = page_lib.build(workdir, log=lambda _: None)
  finally:
    gin.clear_config()
  report_dir = os.path.join(workdir, 'report')
  page, parser = _parse(report_dir)
  # Nothing hostile is markup: no script, no injected tag or attribute.
  assert '<script' not in page.lower()
  assert not re.search(r'<[^>]*\son\w+\s*=', page), 'an event handler'
  assert page.count('</style>') == 1 and page.count('<img') == len(
      [t for t, _ in parser.tags if t == 'img'])
  for fragment in ('<script>', '"><img', '<img src=x', 'onerror=alert(1)>',
                   "'><a", '<a href=java'):
    assert fragment not in page, fragment
  assert not re.findall(r'&(?!amp;|lt;|gt;|quot;|#x27;)', page)
  for tag, attrs in parser.tags:
    assert tag in ('html', 'head', 'meta', 'title', 'style', 'body', 'h1',
                   'h2', 'h3', 'p', 'nav', 'a', 'section', 'table', 'tr', 'th',
                   'td', 'details', 'summary', 'pre', 'figure', 'img',
                   'figcaption', 'span', 'b', 'ul', 'li', 'code'), tag
    assert set(attrs) <= _ALLOWED_ATTRIBUTES, (tag, attrs)
    for key in ('src', 'href'):
      if key in attrs:
        assert re.fullmatch(r'#[a-z-]+|[a-z_]+\.png', attrs[key]), attrs
  # Every link: a file of the report folder, or a section of the page.
  ids = {a.get('id') for _, a in parser.tags}
  sources = [a['src'] for tag, a in parser.tags if tag == 'img']
  assert sources and set(sources) | {'index.html'} == set(
      os.listdir(report_dir))
  for src in sources:
    _check_inside(src)
    _check_png(os.path.join(report_dir, src))
  for tag, attrs in parser.tags:
    if tag == 'a':
      assert attrs['href'][1:] in ids
  # The values are shown, escaped (not dropped): as text they read back.
  text = ''.join(parser.text)
  escaped = html.escape(_ATTACK, quote=True)
  shown = {t: where for t, where in hostile.tags.items()
           if _SHOWN.fullmatch(where)}
  assert {w.split('.')[0] for w in shown.values()} == {
      'summary', 'removal', 'ablation', 'leave_one_out', 'ratio_sweep',
      'operative_config'}
  assert len(shown) > 80, len(shown)
  missing = [where for t, where in shown.items()
             if t + escaped not in page or t + _ATTACK not in text]
  assert not missing, missing
  for split in ('train', 'test'):  # the tfds ids of the example tables
    assert re.search(split + r'id\d+' + re.escape(escaped), page), split
  for section in ('run', 'config', 'memorization-histogram', 'most-memorized',
                  'least-memorized', 'influence-pairs', 'removal',
                  'label-noise', 'leave-one-out', 'ablation', 'ratio-sweep'):
    assert section in built.sections, section


def _set(path, change):
  """Rewrites the JSON file `path` (created if absent) with change(value)."""
  value = {}
  if os.path.exists(path):
    with open(path) as f:
      value = json.load(f)
  with open(path, 'w') as f:
    json.dump(change(value), f)


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)


def _csv_cell(path, column, value):
  """Sets `column` of the first row of the CSV `path` to `value`."""
  with open(path) as f:
    lines = f.read().splitlines()
  header, row = lines[0].split(','), lines[1].split(',')
  row[header.index(column)] = value
  _write(path, '\n'.join([lines[0], ','.join(row)] + lines[2:]) + '\n')


def _topk_strings(path):
  arrays = storage.load_npz(path)
  arrays['train_indices'] = arrays['train_indices'].astype(str)
  with open(path, 'wb') as f:
    f.write(storage.npz_bytes(arrays))


# (file of W/estimates, how it is spoilt, what the one error line says)
_UNUSABLE = [
    ('summary.json', lambda p: _set(p, lambda s: dict(s, design='<b>')),
     'summary.json: design is a JSON string where the estimate binary writes '
     'an object'),
    ('summary.json', lambda p: _set(p, lambda s: dict(
        s, split_half=dict(s['split_half'], trials_per_half=2))),
     'split_half.trials_per_half is a JSON number where the estimate binary '
     'writes a list'),
    ('summary.json', lambda p: _write(p, '[1, 2]'), 'holds a JSON list'),
    ('summary.json', lambda p: _write(p, '{"num_trials": <script>'),
     'is not valid JSON'),
    ('removal.json', lambda p: _set(p, lambda _: {'table': [1]}),
     'removal.json: table[0] is a JSON number where the estimate binary '
     'writes an object'),
    ('ablation.json', lambda p: _set(p, lambda _: {'variants': {'a': 1}}),
     'variants is a JSON object where the estimate binary writes a list'),
    ('memorization.csv',
     lambda p: _csv_cell(p, 'memorization', '<script>alert(1)</script>'),
     "memorization.csv line 2: '<script>alert(1)</script>' in column "
     "'memorization', not a number"),
    ('influence_pairs.csv', lambda p: _csv_cell(p, 'train_index', '100000'),
     'influence_pairs.csv: train_index 100000 is out of range'),
    ('influence_pairs.csv', lambda p: _csv_cell(p, 'test_index', '-1'),
     'influence_pairs.csv: test_index -1 is out of range'),
    ('influence_topk.npz', _topk_strings,
     'influence_topk.npz is not an integer train_indices'),
]


@pytest.mark.parametrize(
    'name, spoil, message', _UNUSABLE,
    ids=[f'{n}-{i}' for i, (n, *_) in enumerate(_UNUSABLE)])
def test_unusable_estimates_are_one_clear_error(runs, tmp_path, name, spoil,
                                                message):
  """A value the report cannot use: a UserError naming the file and the fix
  (the binaries print it as one line and exit 2), and no report at all."""
  workdir = str(tmp_path / 'w')
  shutil.copytree(runs['clean'][0], workdir)
  shutil.rmtree(os.path.join(workdir, 'report'))
  spoil(os.path.join(workdir, 'estimates', name))
  with pytest.raises(errors.UserError) as raised:
    try:
      page_lib.build(workdir, log=lambda _: None)
    finally:
      gin.clear_config()
  text = str(raised.value)
  assert message in text, text
  assert os.path.join(workdir, 'estimates', name) in text
  assert 'Run the estimate binary again' in text, text
  assert not os.path.exists(os.path.join(workdir, 'report'))


@pytest.mark.parametrize('name', ['clean', 'noisy'])
def test_the_pairs_caption_leads_with_the_controlled_pairs(runs, name):
  """The pairs section says how many pairs are controlled (or that none of
  those shown is), the null's count of raw pairs passing by chance, and,
  with none controlled, the planner's words for why; the legend names the
  marks of the figure."""
  workdir = runs[name][0]
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    summary = json.load(f)
  page, _ = _parse(_report_dir(runs, name))
  start = page.index('id="influence-pairs"')
  section = html.unescape(re.sub(r'<[^>]+>', ' ', page[start:start + 20000]))
  section = ' '.join(section.split())
  pairs = summary['trust']['pairs']
  if pairs['controlled']:
    assert f'{pairs["controlled"]} pairs are controlled' in section
  else:
    assert 'No pair is controlled: none of the pairs shown is selected' in (
        section)
    plan = summary.get('planner')
    if plan:
      assert ('Underpowered at this k' in section
              or 'No pair exceeds the null beyond chance' in section
              or 'failed its check' in section
              or 'No pair can be tested' in section)
  null = summary['trust'].get('null')
  if null:
    assert (f'passes {null["raw_pairs"]:.1f} of the {pairs["raw"]:,} raw '
            'pairs by chance') in section
  assert 'marked controlled (selected at the false discovery rate), raw' in (
      section)
