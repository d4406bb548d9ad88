r"""A self-contained HTML report of a workdir's estimates: W/report/index.html.

Built by `python -m tf_memorization.report --workdir=W` (report.py).

The estimate binary builds it at the end of its run (gin `Estimator.report`,
default True; `Estimator.report_dir`, default W/report), handing it the
estimates in memory. Built on its own, it reads what the estimate binary
wrote (W/estimates/summary.json, memorization.csv, influence_pairs.csv,
influence_topk.npz) and W/dataset.npz (labels before and after label noise);
either way the experiments' tables and plots in W/estimates, and
W/operative_config.gin, whose `load_dataset` bindings say where the images
are: in-memory datasets are read whole and indexed; streaming ones (ImageNet)
read only the examples shown, chosen by tfds id, as 64x64 thumbnails.

The folder holds index.html (CSS inline, no scripts, nothing fetched from the
network) and the PNGs it shows; every link is a relative path inside it, so
the folder can be copied or archived as is. Sections of experiments that did
not run are listed at the end with the binding that enables them.

A workdir may be shared or come from someone else, so everything read from it
is untrusted: every value reaches the page as escaped text (a string where a
number belongs is shown as that string), every image is one of the report's
own file names, and a value the report cannot use (a list where an object
belongs, a CSV cell that is no number, an index out of range) is one UserError
naming the file, before anything of the report is written.

The modules of the report:

  reporting/page.py     build(): one function per section, the page
                        assembled and written (the binary: report.py)
  workdir/estimate_inputs.py
                        the estimates files and W/dataset.npz read as
                        untrusted input (an estimates.Estimates), the
                        experiments' files; the examples chosen to be shown
  reporting/images.py   the images of the examples shown, read from tfds by
                        id (the only one importing data.pipelines, lazily)
  reporting/figures.py  the matplotlib figures (image grids, the histogram)
  reporting/markup.py   markup as a type, the page's CSS, tables and sections
"""
import collections
import dataclasses
import os
import time

from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.reporting import figures
from tf_memorization.reporting import images as images_lib
from tf_memorization.reporting import markup
from tf_memorization.workdir import estimate_inputs
from tf_memorization.workdir import estimates as estimates_lib
from tf_memorization.workdir import imported

INDEX_HTML = 'index.html'

PER_CLASS = 8            # examples per class in the example grids
MAX_CLASSES = 20         # classes shown when the dataset has more
MAX_PAIR_TESTS = 12      # influenced test examples shown
PER_TEST = 6             # training examples shown per test example
MAX_FLIPPED = 16         # flipped examples shown in the label-noise section

_LEGEND = ('Caption: the label trained on and memorization ± standard '
           'error. Red border: a flipped label (label 3 (was 5): trained as '
           '3, originally 5).')


@dataclasses.dataclass
class Report:
  """What build() wrote."""
  path: str                 # the index.html
  sections: list            # ids of the sections it holds, in order
  images: bool              # whether the dataset's images could be shown
  num_flipped_shown: int    # flipped-label examples drawn (and marked)
  seconds: float


# A section of the page: its id (a literal), title, body (report_html.Html)
# and the flipped-label examples its figures draw.
_Section = collections.namedtuple('_Section', 'id title body flipped_drawn',
                                  defaults=(0,))


def build(workdir, output_dir=None, estimates_dir=None, parse_config=True,
          gin_bindings=(), log=print, estimates=None,
          shown_estimates_dir=None, gin_files=()):
  """Writes the HTML report of `workdir`'s estimates; returns a Report.

  Args:
    workdir: the train binary's workdir, with estimates.
    output_dir: the report folder (default W/report).
    estimates_dir: where the estimates are (default W/estimates).
    parse_config: parse W/operative_config.gin and `gin_bindings` first (this
      replaces the process's gin config; only the `load_dataset` bindings are
      read); False to use the config already parsed (the estimate binary's).
    gin_bindings: extra bindings, e.g. "load_dataset.data_dir = '/data'"
      when the data moved.
    gin_files: gin files parsed after the workdir's config: the training
      run's own, when they import the module of a dataset builder or source
      of your own (its images are read through it).
    log: callable taking one line.
    estimates: the estimates.Estimates the estimator just wrote, handed in
      memory (None: read from `estimates_dir`, every value checked); the
      experiments' files are read from `estimates_dir` either way.
    shown_estimates_dir: the estimates folder the page names (default
      `estimates_dir`; the estimator's final folder, not its staging one).
  """
  start = time.perf_counter()
  estimates_dir = estimates_dir or estimates_lib.estimates_dir(workdir)
  shown_estimates_dir = shown_estimates_dir or estimates_dir
  output_dir = output_dir or os.path.join(workdir, files.REPORT_DIR)
  trial_config = os.path.join(workdir, files.CONFIG_FILE)
  parsed = {}
  if parse_config:
    parsed = images_lib.parse_config(
        ([trial_config] if estimate_inputs.exists(trial_config) else [])
        + list(gin_files), list(gin_bindings))
  if estimates is None:
    estimates = estimate_inputs.load(workdir, estimates_dir)
  # The config shown is the one parsed (the file is read once).
  training_config = (parsed[trial_config] if trial_config in parsed
                     else estimate_inputs.training_config(workdir))
  created = storage.check_writable(output_dir)
  try:  # the page and its PNGs, in memory
    page = _page(workdir, estimates_dir, shown_estimates_dir, estimates,
                 training_config, log)
    sections = [s for s in (
        _trust_section(page), _run_section(page), _config_section(page),
        _histogram_section(page),
        _examples_section(page, most=True), _examples_section(page, most=False),
        _pairs_section(page), _removal_section(page),
        _label_noise_section(page), _membership_section(page),
        _proxies_section(page), _label_issues_section(page),
        _leave_one_out_section(page),
        _ablation_section(page), _ratio_sweep_section(page)) if s]
    sections += [s for s in [_not_run_section(page, sections)] if s]
    index = _document(page, sections)
  except BaseException:
    storage.remove_if_empty(created)  # nothing of the report was written
    raise
  path = _write(output_dir, page.files, index)
  return Report(path=path, sections=[s.id for s in sections],
                images=page.images.available,
                num_flipped_shown=sum(s.flipped_drawn for s in sections),
                seconds=time.perf_counter() - start)


def _write(output_dir, files, index):
  """Writes the PNGs, then the page showing them; removes the report's files
  left over from an earlier report. The page's path."""
  for name, payload in files.items():
    storage.atomic_replace(os.path.join(output_dir, name), payload)
  path = os.path.join(output_dir, INDEX_HTML)
  storage.atomic_write_text(path, index)
  for name in markup.FILES:  # left over from an earlier report
    stale = os.path.join(output_dir, name)
    if name not in files and estimate_inputs.exists(stale):
      estimate_inputs.gfile().remove(stale)
  return path


# --------------------------------------------------------------------------
# The examples shown


@dataclasses.dataclass
class _Page:
  """What the sections are built from; `files` ({name: PNG bytes}) gets the
  PNGs they draw or copy, written once the whole page is built."""
  workdir: str
  estimates_dir: str
  shown_estimates_dir: str
  inputs: estimates_lib.Estimates
  summary: estimate_inputs.Json      # summary.json, untrusted either way
  training_config: str
  log: object
  chosen: estimate_inputs.Chosen     # the examples shown
  images: images_lib.Images     # their images
  files: dict = dataclasses.field(default_factory=dict)

  @property
  def note(self):
    """Why there are no images, above each figure of them ('' if there are)."""
    if self.images.available:
      return markup.Html()
    return markup.note(self.images.note or 'No images.')


def _page(workdir, estimates_dir, shown_estimates_dir, inputs,
          training_config, log):
  """The _Page of `inputs`: the examples chosen, and their images read."""
  summary = estimate_inputs.Json(
      inputs.summary,
      os.path.join(shown_estimates_dir, estimates_lib.SUMMARY_JSON), workdir)
  chosen = estimate_inputs.choose(inputs, PER_CLASS, MAX_CLASSES,
                                  MAX_PAIR_TESTS, PER_TEST, MAX_FLIPPED)
  images = images_lib.load_images(inputs, chosen.train_indices(),
                                  chosen.test_indices(), log)
  return _Page(workdir, estimates_dir, shown_estimates_dir, inputs, summary,
               training_config, log, chosen, images)


# --------------------------------------------------------------------------
# The sections, in the page's order


def _trust_section(page):
  """What can be trusted: the controlled sets first, the paper's raw sets
  beside them, the null, convergence with k and the planner."""
  trust = page.summary.obj('trust')
  if not trust:
    return None  # an estimate of an earlier version
  body = markup.trust_tables(trust, page.summary.obj('split_half'),
                             page.summary.obj('planner'))
  rows = trust.objs('convergence')
  if rows:
    png = estimate_inputs.copy_figure(page.estimates_dir, page.files,
                                      estimates_lib.CONVERGENCE_PNG)
    body += markup.markup('<h3>Convergence with k</h3>')
    if png:
      body += markup.figure(png, 'convergence with k', (
          'The estimates on every 8th, 4th and 2nd trial against all of '
          'them: rank agreement of memorization, Jaccard of the pair sets, '
          'and the sizes of the sets.'))
    body += markup.convergence_table(rows)
  return _Section('trust', 'What to trust', body)


def _run_section(page):
  return _Section('run', 'Run', markup.table(['quantity', 'value'],
                                             markup.run_rows(page.summary)))


def _config_section(page):
  return _Section('config', 'Config', markup.configs(
      page.training_config, files.CONFIG_FILE,
      page.summary.get('operative_config')))


def _embed_copy(page, name, alt, caption):
  """Copies an experiment's PNG and returns its figure HTML ('' if absent)."""
  png = estimate_inputs.copy_figure(page.estimates_dir, page.files, name)
  if not png:
    return markup.Html()
  return markup.figure(png, alt, caption)


def _histogram_section(page):
  """The memorization histogram, the ablation's variants overlaid."""
  variants = estimate_inputs.ablation_memorization(page.workdir, page.log)
  histogram = figures.histogram(page.files, page.inputs, page.summary,
                                variants)
  if histogram:
    caption = ('Memorization estimates of all training examples'
               + (', full network against the ablation\'s retrained top '
                  '(same subset masks, everything below frozen at a reference '
                  'model)' if variants else '') + '.')
    body = markup.figure(histogram, 'memorization histogram', caption)
  else:
    body = markup.note('No example has a memorization estimate.')
  ablation_png = None if variants else estimate_inputs.copy_figure(
      page.estimates_dir, page.files, estimates_lib.ABLATION_PNG)
  if ablation_png:
    body += markup.figure(ablation_png, 'ablation histogram',
                          'The ablation\'s histogram (its records were not '
                          'found to redraw it).')
  return _Section('memorization-histogram', 'Memorization histogram', body)


def _examples_section(page, most):
  """The most (or least) memorized examples of each class shown."""
  classes = page.chosen.classes
  if most:
    section_id, title, name = ('most-memorized', 'Most memorized examples',
                               'most_memorized.png')
    chosen = page.chosen.top
    what = (f'The up to {PER_CLASS} training examples of each class with the '
            'highest memorization (ties: the smaller standard error first)')
  else:
    section_id, title, name = ('least-memorized',
                               'Least memorized (typical) examples',
                               'least_memorized.png')
    chosen = page.chosen.bottom
    what = (f'The up to {PER_CLASS} training examples of each class with the '
            'lowest memorization (negative estimates count as 0; ties: the '
            'highest held-out accuracy first), for contrast')
  rows = [(figures.class_title(page.images, c),
           [figures.memorization_cell(page.inputs, page.images, i)
            for i in chosen.get(c, [])])
          for c in classes if chosen.get(c)]
  if not rows:
    return _Section(section_id, title,
                    markup.note('No example has an estimate.'))
  figures.grid(page.files, name, rows)
  indices = [i for c in classes for i in chosen.get(c, [])]
  num_classes = markup.text(page.summary.obj('dataset').get('num_classes'))
  shown = (f'{len(classes)} of {num_classes} classes (those whose top '
           'examples are the most memorized)'
           if len(classes) < len(page.chosen.top) else 'every class')
  caption = f'{what}; {shown}. {_LEGEND}'
  return _Section(section_id, title, page.note +
                  markup.figure(name, title, caption) +
                  markup.examples_table(page.inputs, indices),
                  int(page.chosen.flipped[indices].sum()))


def _pairs_section(page):
  """The test examples most influenced, beside their training examples."""
  inputs, pair_rows = page.inputs, page.chosen.pair_rows
  if not pair_rows:
    return _Section('influence-pairs', 'High-influence pairs', markup.note(
        'No influence estimates to show (no pair over the thresholds and '
        'Estimator.topk = 0).'))
  controlled = inputs.controlled_pairs()
  rows = [(f'test #{j}', figures.pair_cells(inputs, page.images, j, entries,
                                            controlled))
          for j, entries in pair_rows]
  drawn = sum(int(page.chosen.flipped[i]) for _, entries in pair_rows
              for i, *_ in entries)
  figures.grid(page.files, 'influence_pairs.png', rows, title_width=0,
               gap_after=1)
  thresholds = page.summary.obj('pair_thresholds')
  influence, memorization = (markup.text(thresholds.get(key), None)
                             for key in ('influence', 'memorization'))
  of_label = (' of its label (influence across labels is not computed: '
              "Estimator.influence_scope = 'same_label')"
              if page.summary.get('influence_scope') == 'same_label' else '')
  if len(inputs.pairs['train']):
    what = (f'The {len(pair_rows)} test examples with the most influential '
            f'high-influence pairs (influence ≥ {influence}, memorization ≥ '
            f'{memorization}'
            + (', same label' if thresholds.get('same_label') else '') +
            f'; {markup.text(page.summary.get("num_pairs"))} pairs in all), '
            f'each beside its up to {PER_TEST} most influential training '
            f'examples{of_label}. Blue border: a pair over the thresholds (± '
            'its standard error).')
  else:
    what = (f'No pair passes the thresholds (influence ≥ {influence}, '
            f'memorization ≥ {memorization}); shown instead: the '
            f'{len(pair_rows)} test examples with the largest influence of '
            f'any training example, beside their most influential training '
            f'examples{of_label}.')
  what = _controlled_lead(page, pair_rows, controlled) + ' ' + what
  body = (page.note + markup.figure('influence_pairs.png', 'influence pairs',
                                    what + ' Each training example is marked '
                                    'controlled (selected at the false '
                                    'discovery rate), raw (over the paper\'s '
                                    'thresholds only) or top-k (neither). '
                                    'Red border: a flipped label.') +
          markup.pairs_table(inputs, pair_rows))
  return _Section('influence-pairs', 'High-influence pairs', body, drawn)


def _controlled_lead(page, pair_rows, controlled_set):
  """The caption's first sentences: how many pairs are controlled and shown
  first, how many raw pairs the null passes by chance, and, when none is
  controlled, whether that is for want of trials (the planner's words)."""
  trust = page.summary.obj('trust')
  pairs, null = trust.obj('pairs'), trust.obj('null')
  controlled = pairs.get('controlled')
  if controlled is None:
    return ''
  parts = []
  if controlled:
    shown = sum((int(i), int(j)) in controlled_set for j, entries in pair_rows
                for i, *_ in entries)
    parts.append(f'{markup.text(controlled)} pairs are controlled (false '
                 f'discovery rate ≤ {markup.text(pairs.get("level"))}, H0: '
                 f'influence ≤ {markup.text(pairs.get("null_influence"))}); '
                 f'the test examples holding them come first ({shown} of '
                 'them shown).')
  else:
    parts.append('No pair is controlled: none of the pairs shown is '
                 'selected at the false discovery rate.')
  if null and pairs.get('raw') is not None:
    parts.append(f'The null (trials given each other\'s test predictions) '
                 f'passes {markup.text(null.get("raw_pairs"), 1)} of the '
                 f'{markup.text(pairs.get("raw"))} raw pairs by chance.')
  sentence = page.summary.obj('planner').get('pair_sentence')
  if not controlled and isinstance(sentence, str) and sentence:
    parts.append(sentence[0].upper() + sentence[1:] + '.')
  return ' '.join(parts)


def _experiment(page, kind):
  """(A note unless this run's summary lists the experiment `kind`, the Json
  of its `kind`.json or None.) The summary is read first, so that a bad one
  is the error even when no experiment ran."""
  ran = kind in page.summary.obj('experiments').keys()
  earlier = markup.Html() if ran else markup.note(
      'From an earlier run of the estimate binary (this summary lists no such '
      'experiment).')
  return earlier, estimate_inputs.read_json(
      os.path.join(page.estimates_dir, f'{kind}.json'), page.workdir)


def _removal_section(page):
  earlier, removal = _experiment(page, 'removal')
  if not removal:
    return None
  body = earlier + _embed_copy(
      page, estimates_lib.REMOVAL_PNG, 'removal curve',
      'Test accuracy after removing memorized vs random training examples '
      '(mean ± std).')
  return _Section('removal', estimates_lib.TITLES['removal'],
                  body + markup.removal_tables(removal))


def _label_noise_section(page):
  noise = page.summary.obj('label_noise')
  if not noise:
    return None
  body = markup.label_noise_text(noise)
  body += _embed_copy(page, estimates_lib.LABEL_NOISE_PNG, 'ROC curve',
                      'ROC curve of memorization as a detector of flipped '
                      'labels.')
  shown = page.chosen.flipped_shown
  if len(shown):
    cells = [figures.memorization_cell(page.inputs, page.images, i)
             for i in shown]
    rows = [('', cells[s:s + PER_CLASS])
            for s in range(0, len(cells), PER_CLASS)]
    figures.grid(page.files, 'flipped.png', rows, title_width=0)
    body += (page.note + markup.figure(
        'flipped.png', 'flipped labels',
        f'The {len(shown)} flipped examples with the highest memorization. '
        + _LEGEND) + markup.examples_table(page.inputs, shown))
  return _Section('label-noise', 'Label-noise detection', body, len(shown))


def _membership_section(page):
  """LiRA from the same trials (per_example.py): ROC, AUC, TPR at low FPR."""
  found = page.summary.obj('membership')
  if not found:
    return None
  attacks = [(name, found.obj('attacks').obj(name))
             for name in found.obj('attacks').keys()]
  body = markup.markup(
      '<p>Each of {} trials in turn is the target model and the others '
      'its shadows: per example, Gaussians of the log-odds of its label '
      'over the trials that trained on it and those that did not (online '
      'LiRA, Carlini et al. 2022; scores from {}). Per-example AUC '
      '(P(in-trial log-odds &gt; out-trial)) against memorization: '
      'Spearman {}, Pearson {}; mean per-example AUC {} for examples with '
      'memorization ≥ 0.25, {} for the others.</p>',
      markup.fmt(found.get('targets')), markup.fmt(found.get('source')),
      markup.fmt(found.get('memorization_spearman'), 3),
      markup.fmt(found.get('memorization_pearson'), 3),
      markup.fmt(found.get('mean_example_auc_memorized'), 3),
      markup.fmt(found.get('mean_example_auc_others'), 3))
  body += _embed_copy(page, estimates_lib.MEMBERSHIP_PNG, 'LiRA ROC curves',
                      'ROC curves of membership inference on log-log axes.')
  body += markup.membership_table(attacks)
  return _Section('membership', 'Membership inference (LiRA)', body)


def _proxies_section(page):
  """How well cheap proxies from few trials rank the memorization."""
  found = page.summary.obj('proxies')
  if not found:
    return None
  body = markup.markup('<p>{}</p>', markup.fmt(found.get('line')))
  if not found.get('dynamics_recorded'):
    body += markup.note('The records hold no learning-dynamics proxies '
                        '(record format 3 records them): held-out scores '
                        'only.')
  body += _embed_copy(page, estimates_lib.PROXIES_PNG, 'proxies',
                      'Spearman of each proxy from the first trials with '
                      'the memorization from all of them. Ravikumar et al. '
                      '(2025) report cosine 0.87 / Pearson 0.79 of the '
                      'cumulative sample loss against the paper\'s '
                      'CIFAR-100 scores.')
  body += markup.proxies_table(found.objs('rows'))
  return _Section('proxies', 'Predicting memorization cheaply', body)


def _label_issues_section(page):
  found = page.summary.obj('label_issues')
  if not found:
    return None
  body = markup.markup(
      '<p>{} holds <code>pred_probs</code> for {} training examples: each '
      'the mean class probabilities of the trials that held it out, the '
      'layout label-issue tools such as cleanlab take.</p>',
      markup.fmt(found.get('file')), markup.fmt(found.get('examples')))
  detectors = found.obj('detectors')
  if detectors:
    body += markup.detectors_table(
        [(name, detectors.obj(name)) for name in detectors.keys()])
  return _Section('label-issues', 'Held-out class probabilities', body)


def _leave_one_out_section(page):
  earlier, loo = _experiment(page, 'leave_one_out')
  if not loo:
    return None
  body = earlier + markup.leave_one_out_text(loo)
  body += _embed_copy(page, estimates_lib.LEAVE_ONE_OUT_PNG,
                      'estimate vs leave-one-out',
                      'Subsampled estimate against direct leave-one-out '
                      'memorization (± standard error).')
  return _Section('leave-one-out', estimates_lib.TITLES['leave_one_out'],
                  body)


def _ablation_section(page):
  earlier, ablation = _experiment(page, 'ablation')
  if not ablation:
    return None
  return _Section('ablation', estimates_lib.TITLES['ablation'],
                  earlier + markup.ablation_table(ablation))


def _ratio_sweep_section(page):
  earlier, sweep = _experiment(page, 'ratio_sweep')
  if not sweep:
    return None
  return _Section('ratio-sweep', estimates_lib.TITLES['ratio_sweep'],
                  earlier + markup.ratio_sweep_table(sweep))


def _not_run_section(page, sections):
  """The experiments without a section among `sections`, and the binding
  that enables each (None when every one ran)."""
  ids = {s.id for s in sections}
  body = markup.not_run([kind for kind in estimates_lib.TITLES
                         if kind.replace('_', '-') not in ids],
                        page.summary.obj('label_noise'),
                        page.summary.obj('dataset').get('version')
                        == imported.DATA_VERSION)
  return _Section('not-run', 'Not run', body) if body else None


def _document(page, sections):
  """index.html's text."""
  title = markup.markup('Memorization report: {}', markup.fmt(
      page.summary.obj('dataset').get('name')))
  line = markup.markup('{} trials, built {} from {}.',
                       markup.fmt(page.summary.get('num_trials')),
                       time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                       page.shown_estimates_dir)
  advice = page.summary.obj('planner').get('advice')
  if advice:
    line = markup.markup('{} {}', line, markup.fmt(advice))
  return markup.document(title, line, [s[:3] for s in sections])


# --------------------------------------------------------------------------
