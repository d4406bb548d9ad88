"""The report's markup: a type for it, the page's CSS, and its parts.

Every value that reaches the page comes from files anyone may have written (a
workdir may be shared or copied), so markup is a type: Html, made only from
the report modules' literals (`markup`'s templates) with every value filled in
escaped. The page and its parts (table, figure, Sections, document) escape
whatever is not Html, so a value that skipped fmt or escape shows as text,
never as markup; and joining or adding plain text to markup escapes it.

Also here: text (any value, e.g. a leaf of an untrusted JSON file, as plain
text), and the tables of the run and of the removal experiment.
"""

import html
import re

import numpy as np

from tf_memorization.workdir import estimates

# PNGs the report draws (report_figures); with the experiments' figures it
# copies (estimates.FIGURES), the only files of the report folder besides
# index.html, and the only names an <img> of the page may show.
GENERATED = ('memorization_histogram.png', 'most_memorized.png',
             'least_memorized.png', 'influence_pairs.png', 'flipped.png')
FILES = GENERATED + estimates.FIGURES

CSS = """
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

# What each Estimator.influence_scope computes, as the report says it.
SCOPE_WORDS = {
    'same_label': ('within each label: the top-k training examples of a '
                   'test example and each training example\'s largest '
                   'influence are among examples of the same label; '
                   'influence across labels is not computed '
                   '(Estimator.influence_scope = \'same_label\')'),
    'all': 'every (training, test) pair (Estimator.influence_scope = \'all\')',
}


class Html(str):
  """Markup, safe to put in the page as it is (from markup, escape, fmt)."""

  def __add__(self, other):
    return Html(str.__add__(self, escape(other)))

  def __radd__(self, other):
    return Html(str.__add__(escape(other), self))


def escape(value):
  """`value` as escaped text (str() of it); markup is kept as it is."""
  if isinstance(value, Html):
    return value
  return Html(html.escape(str(value), quote=True))


def markup(template, *values):
  """The markup `template` (a literal of the report modules) with its `{}`
  fields filled by `values`, each escaped unless it is markup already."""
  return Html(template.format(*(escape(v) for v in values)))


def join(parts, separator=''):
  return Html(escape(separator).join(escape(p) for p in parts))


def number(value):
  """`value` as a finite float when it is a real number, else None."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)):
    return None
  value = float(value)
  return value if np.isfinite(value) else None


def text(value, digits=4):
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
    return '[' + ', '.join(text(v, digits) for v in value) + ']'
  if isinstance(value, dict):
    return '{' + ', '.join(f'{text(k, digits)}: {text(v, digits)}'
                           for k, v in value.items()) + '}'
  return str(value)


def fmt(value, digits=4):
  """`value` (a number, or whatever a file holds in its place) as markup."""
  return escape(text(value, digits))


def plus_minus(pair):
  """'mean ± std' of a [mean, std] pair; anything else shown as it is."""
  if not isinstance(pair, list) or len(pair) > 2:
    return fmt(pair)
  if not pair or pair[0] is None:
    return fmt(None)
  if len(pair) < 2 or pair[1] is None:
    return fmt(pair[0])
  return markup('{} ± {}', fmt(pair[0]), fmt(pair[1]))


def table(header, rows, numeric=()):
  """An HTML table; cells are escaped text unless they are markup (Html)."""
  out = [markup('<table>'), markup('<tr>{}</tr>', join(
      markup('<th>{}</th>', h) for h in header))]
  for row in rows:
    out.append(markup('<tr>{}</tr>', join(
        markup('<td class="num">{}</td>' if column in numeric else
               '<td>{}</td>', cell) for column, cell in enumerate(row))))
  out.append(markup('</table>'))
  return join(out, '\n')


def figure(src, alt, caption=None):
  """An image of the report folder, by one of the names the report writes
  (FILES; never a name from an input, so a src cannot lead anywhere else)."""
  if src not in FILES:
    raise ValueError(f'{src!r} is not a file of the report')
  return markup('<figure><img src="{}" alt="{}">{}</figure>', src, alt,
                markup('<figcaption>{}</figcaption>', caption) if caption
                else '')


def note(message):
  return markup('<p class="note">{}</p>', message)


def label(inputs, i):
  """Training example i's label (an estimates.Estimates), a flipped one
  marked with the original."""
  label_, original = (int(inputs.train_labels[i]),
                      int(inputs.original_train_labels[i]))
  if label_ != original:
    return markup('<span class="flipped">{} (was {})</span>', label_,
                  original)
  return escape(label_)


def examples_table(inputs, indices):
  """The training examples `indices` of `inputs` (an estimates.Estimates),
  as a folded table."""
  rows = [[int(i), inputs.train_ids[i], label(inputs, i),
           fmt(inputs.memorization[i]), fmt(inputs.stderr[i]),
           fmt(inputs.consistency[i]), f'{inputs.k_in[i]} / {inputs.k_out[i]}']
          for i in indices]
  return markup('<details><summary>The examples shown, as a table</summary>'
                '{}</details>', table(
                    ['index', 'tfds id', 'label', 'memorization', 'stderr',
                     'held-out accuracy', 'k_in / k_out'], rows,
                    numeric=(0, 3, 4, 5)))


class Sections:
  """The report's sections, in order."""

  def __init__(self):
    self.items = []

  def add(self, section_id, title, body):
    # Ids are the report's literals, used bare in id= and href="#...".
    if not re.fullmatch(r'[a-z]+(-[a-z]+)*', section_id):
      raise ValueError(f'bad section id {section_id!r}')
    self.items.append((section_id, escape(title), escape(body)))

  def html(self):
    return join((markup('<section id="{}">\n<h2>{}</h2>\n{}\n</section>', i,
                        t, b) for i, t, b in self.items), '\n')

  def nav(self):
    return markup('<nav>{}</nav>', join(
        markup('<a href="#{}">{}</a>', i, t) for i, t, _ in self.items))


def document(title, line, sections):
  """The whole page: `title` (h1 and <title>), a note `line` under it, the
  navigation and the `sections` ([(id, title, body)], in order)."""
  by_order = Sections()
  for section_id, section_title, body in sections:
    by_order.add(section_id, section_title, body)
  return join([
      markup('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta '
             'charset="utf-8">\n<meta name="viewport" '
             'content="width=device-width, initial-scale=1">'),
      markup('<title>{}</title>\n<style>{}</style>\n</head>\n<body>', title,
             Html(CSS)),
      markup('<h1>{}</h1>', title), note(line),
      by_order.nav(), by_order.html(), markup('</body>\n</html>\n')], '\n')


def configs(training_config, config_file, operative_config):
  """The config section's body: the trials' config (the text of the
  workdir's `config_file`) and the estimator's, each where there is one."""
  parts = []
  if training_config:
    parts.append(markup(
        '<details open><summary>Training config ({}, what the trials ran '
        'with)</summary><pre>{}</pre></details>', config_file,
        training_config))
  if operative_config:
    parts.append(markup(
        '<details><summary>Estimator config (operative gin of the estimate '
        'binary)</summary><pre>{}</pre></details>', fmt(operative_config)))
  return join(parts, '\n') or note('No config found.')


def run_rows(summary):
  """The rows of the run table, from summary.json (a report_inputs.Json)."""
  dataset = summary.obj('dataset')
  design = summary.obj('design')
  split = summary.obj('split_half')
  rows = [
      ('dataset', markup('{} (version {}, {} classes, images {})',
                         fmt(dataset.get('name')), fmt(dataset.get('version')),
                         fmt(dataset.get('num_classes')),
                         fmt(dataset.get('image_shape')))),
      ('training / test examples', markup('{} / {}', fmt(summary.get(
          'num_train')), fmt(summary.get('num_test')))),
      ('trials (k)', fmt(summary.get('num_trials'))),
      ('subset ratio', join((fmt(r, None) for r in
                             summary.array('subset_ratios')), ', ')),
      ('subset design', join((markup('{} {}', k, fmt(v, None))
                              for k, v in design.items()), ', ')),
      ('mean accuracy of the trials: train / held-out / test',
       markup('{} / {} / {}', fmt(summary.get('mean_train_accuracy')),
              fmt(summary.get('mean_heldout_accuracy')),
              fmt(summary.get('mean_test_accuracy')))),
      ('Lemma 2.1 bound on E[(estimate − true)²]',
       fmt(summary.get('lemma_2_1_bound'))
       if summary.get('lemma_2_1_bound') is not None
       else 'n/a (several subset ratios)'),
  ]
  if split:
    rows += [
        (markup('split-half consistency (even vs odd trials, {}): '
                'memorization Pearson / Spearman',
                join((fmt(t) for t in split.array('trials_per_half')), '/')),
         markup('{} / {}', fmt(split.get('memorization_pearson'), 3),
                fmt(split.get('memorization_spearman'), 3))),
        ('split-half pairs: per half, Jaccard',
         markup('{}, {}', join((fmt(p) for p in split.array(
             'pairs_per_half')), ' / '), fmt(split.get('pairs_jaccard'), 3))),
        ('split-half controlled pairs: per half, Jaccard',
         markup('{}, {}', join((fmt(p) for p in split.array(
             'controlled_pairs_per_half')), ' / '),
                fmt(split.get('controlled_pairs_jaccard'), 3))),
    ]
  else:
    rows.append(('split-half consistency',
                 'not computed (needs k ≥ 4 and Estimator.split_half = True)'))
  for threshold, count in summary.obj('memorization_counts').items():
    rows.append((markup('examples with memorization ≥ {}', threshold),
                 fmt(count)))
  thresholds = summary.obj('pair_thresholds')
  rows += [
      ('examples with no estimate (never in or never out)',
       fmt(summary.get('undefined_memorization'))),
      (markup('memorization stderr: median / max / max where memorization ≥ '
              '{}', fmt(thresholds.get('memorization', 'threshold'), None)),
       markup('{} / {} / {}', fmt(summary.get('median_memorization_stderr')),
              fmt(summary.get('max_memorization_stderr')),
              fmt(summary.get('max_stderr_of_memorized')))),
      (markup('high-influence pairs (influence ≥ {}, memorization ≥ {}, same '
              'label: {})', fmt(thresholds.get('influence'), None),
              fmt(thresholds.get('memorization'), None),
              fmt(thresholds.get('same_label'))),
       fmt(summary.get('num_pairs'))),
  ]
  correlation = summary.obj('memorization_vs_influence')
  if correlation:
    rows.append(('memorization vs largest influence: Pearson / Spearman',
                 markup('{} / {}', fmt(correlation.get('pearson'), 3),
                        fmt(correlation.get('spearman'), 3))))
  rows.append(('influence scores', fmt(summary.get('influence_scores'))))
  scope = summary.get('influence_scope')
  if scope is not None:  # summaries written before it had every pair
    rows.append(('influence computed', SCOPE_WORDS.get(scope, fmt(scope))))
  rows += [('config fingerprint', fmt(summary.get('fingerprint'))),
           ('workdir', fmt(summary.get('workdir')))]
  return rows


def removal_tables(removal):
  """The removal experiment's tables, from removal.json (a
  report_inputs.Json)."""
  entries = removal.objs('table')
  curve = [e for e in entries if e.get('condition') in ('full', 'memorized',
                                                        'random')]
  influence = [e for e in entries if e.get('condition') in (
      'full', 'influence_set', 'influence_random')]

  def rows(chosen):
    return [[fmt(e.get('condition')), '' if e.get('threshold') is None
             else fmt(e.get('threshold'), None), fmt(e.get('num_removed')),
             plus_minus(e.get('test_accuracy')),
             plus_minus(e.get('influenced_accuracy'))] for e in chosen]

  header = ['condition', 'memorization ≥', 'removed', 'test accuracy',
            'accuracy on the influenced test examples']
  parts = [markup('<p>Test accuracy (mean ± std over {} models a condition) '
                  'after removing the training examples with memorization '
                  'over each threshold, against removing as many random '
                  'examples.</p>', fmt(removal.get('repeats'))),
           table(header, rows(curve), numeric=(2, 3, 4))]
  if any(e.get('condition') == 'influence_set' for e in influence):
    parts += [markup('<h3>Influence set</h3>'),
              markup('<p>Removing the training examples of the '
                     'high-influence pairs ({} influenced test examples), '
                     'against removing as many random examples.</p>',
                     fmt(removal.get('num_influenced_test_examples'))),
              table(header, rows(influence), numeric=(2, 3, 4))]
  return join(parts, '\n')


def pairs_table(inputs, rows):
  """The pairs `rows` (report_inputs.pair_rows of the estimates.Estimates
  `inputs`) as a folded table."""
  controlled = inputs.controlled_pairs()
  cells = [[j, inputs.test_ids[j], int(inputs.test_labels[j]), int(i),
            inputs.train_ids[i], label(inputs, i),
            fmt(value) if stderr is None else
            markup('{} ± {}', fmt(value), fmt(stderr)),
            fmt(inputs.memorization[i]), fmt(is_pair),
            fmt((int(i), int(j)) in controlled)]
           for j, entries in rows for i, value, stderr, is_pair in entries]
  return markup('<details><summary>The pairs shown, as a table</summary>{}'
                '</details>', table(
                    ['test index', 'test tfds id', 'test label',
                     'train index', 'train tfds id', 'train label',
                     'influence', 'memorization', 'over thresholds',
                     'controlled (FDR)'], cells,
                    numeric=(0, 3, 6, 7)))


def label_noise_text(noise):
  """The label-noise detection in a sentence (summary.json's label_noise)."""
  return markup(
      '<p>{} training labels were flipped before training. Ranking the '
      'examples by memorization finds them with ROC AUC <b>{}</b>; precision '
      'among the {} most memorized: {}.</p>',
      fmt(noise.get('num_flipped')), fmt(noise.get('auc'), 3),
      fmt(noise.get('num_flipped_estimable')),
      fmt(noise.get('precision_at_flipped'), 3))


def leave_one_out_text(loo):
  """The leave-one-out comparison in a sentence or two (leave_one_out.json);
  the middle band's agreement where the file has it (an earlier version's
  has not)."""
  if 'full_repeats' not in loo.keys():
    return markup(
        '<p>{} examples, each left out of {} models trained on the full set: '
        'Spearman {}, Pearson {}, mean |difference| {}.</p>',
        len(loo.array('examples')), fmt(loo.get('repeats')),
        fmt(loo.get('spearman'), 3), fmt(loo.get('pearson'), 3),
        fmt(loo.get('mean_abs_difference'), 3))
  overall = markup(
      '<p>{} examples, drawn within strata of the subsampled estimate; {} '
      'models on the full training set, at least {} without each example '
      '({} models in all). Overall: Spearman {}, Pearson {}, mean '
      '|difference| {}, mean difference (leave-one-out − subsampled) {}. ',
      len(loo.array('examples')), fmt(loo.get('full_repeats')),
      fmt(loo.get('repeats')), fmt(loo.get('models_trained')),
      fmt(loo.get('spearman'), 3), fmt(loo.get('pearson'), 3),
      fmt(loo.get('mean_abs_difference'), 3),
      fmt(loo.get('mean_signed_difference'), 3))
  band = loo.obj('middle_band')
  limits = band.array('band')
  return overall + markup(
      'In the middle band {} ≤ subsampled estimate ≤ {}: {} examples, '
      'Spearman <b>{}</b>, mean |difference| {}; a fraction {} differ by more '
      'than their combined standard errors (median leave-one-out standard '
      'error {}). Leave-one-out trains on all n examples against n − 1, the '
      'subsampled estimate on subsets: it is expected to be lower.</p>',
      fmt(limits[0] if limits else None, None),
      fmt(limits[-1] if limits else None, None),
      fmt(band.get('num_examples')), fmt(band.get('spearman'), 3),
      fmt(band.get('mean_abs_difference'), 3),
      fmt(band.get('fraction_differs'), 3),
      fmt(band.get('median_loo_stderr'), 3))


def ablation_table(ablation):
  """The ablation's variants (ablation.json)."""
  rows = [[fmt(v.get('variant')), fmt(v.get('mean_test_accuracy')),
           fmt(v.get('memorized_025')), fmt(v.get('num_pairs'))]
          for v in ablation.objs('variants')]
  return markup('<p>On the first {} subset masks; the histogram above '
                'overlays the variants.</p>',
                fmt(ablation.get('trials_used'))) + table(
                    ['variant', 'mean test accuracy', 'memorization ≥ 0.25',
                     'high-influence pairs'], rows, numeric=(1, 2, 3))


def ratio_sweep_table(sweep):
  """The subset-ratio sweep (ratio_sweep.json), a column per field of
  estimates.RATIO_SWEEP_HEADER."""
  header = estimates.RATIO_SWEEP_HEADER
  rows = [[fmt(entry.get(h), 3) for h in header]
          for entry in sweep.objs('table')]
  return table([h.replace('_', ' ') for h in header], rows,
               numeric=tuple(range(len(header))))


def not_run(kinds, label_noise, imported=False):
  """The experiments `kinds` did not run and `label_noise` (whether the
  label-noise section is shown), as a list with the binding enabling each;
  for `imported` trials, which need this package's trainer."""
  if imported:
    if not kinds:
      return None
    return markup('<p>These sections retrain models with this package\'s '
                  'train binary; the trials of this workdir were imported '
                  'from another trainer, so they do not run:</p><ul>{}</ul>',
                  join(markup('<li>{}</li>', estimates.TITLES[kind])
                       for kind in kinds))
  items = [markup('<li>{}: <code>{}</code> (estimate binary)</li>',
                  estimates.TITLES[kind],
                  f'Estimator.experiments = ({kind!r},)') for kind in kinds]
  if not label_noise:
    items.append(markup('<li>Label-noise detection: <code>'
                        'label_noise.fraction = 0.05</code> (train binary, in '
                        'a new workdir)</li>'))
  if not items:
    return None
  return markup('<p>These sections are left out because their experiments '
                'did not run; the binding that enables each:</p><ul>{}</ul>',
                join(items))


def trust_tables(trust, split, plan):
  """The report's first section: the controlled sets beside the paper's raw
  ones, the null's false discovery estimate, the split halves and the
  planner (the summary's 'trust', 'split_half' and 'planner' Json)."""
  pairs, memorized, null = (trust.obj('pairs'), trust.obj('memorized'),
                            trust.obj('null'))
  rows = [
      ['pairs', markup('<b>{}</b>', fmt(pairs.get('controlled'))),
       fmt(pairs.get('raw')),
       fmt(null.get('raw_pairs'), 1) if null else fmt(None),
       fmt(null.get('pairs_fdp'), 2) if null else fmt(None),
       fmt(split.get('controlled_pairs_jaccard'), 3) if split else fmt(None),
       fmt(split.get('pairs_jaccard'), 3) if split else fmt(None)],
      ['memorized examples', markup('<b>{}</b>', fmt(memorized.get(
          'controlled'))), fmt(memorized.get('raw')),
       fmt(null.get('raw_memorized'), 1) if null else fmt(None),
       fmt(null.get('memorized_fdp'), 2) if null else fmt(None),
       fmt(split.get('controlled_memorized_jaccard'), 3) if split
       else fmt(None),
       fmt(split.get('memorized_jaccard'), 3) if split else fmt(None)]]
  body = table(['set', 'controlled (FDR)', 'raw (paper thresholds)',
                'raw by chance (null)', 'est. false share of raw',
                'split-half Jaccard, controlled', 'split-half Jaccard, raw'],
               rows, numeric=(1, 2, 3, 4, 5, 6))
  body += note(markup(
      'Controlled: selected by {} at false discovery rate {} (pairs: H0 '
      'influence ≤ {}; examples: H0 memorization ≤ {}). Raw: the paper\'s '
      'thresholds. The null gives every trial another trial\'s test '
      'predictions (for memorization: another trial\'s subset), so that '
      'every true effect is 0: what still passes the raw thresholds passes '
      'by chance.', text(pairs.get('method')).upper(),
      fmt(pairs.get('level'), None), fmt(pairs.get('null_influence'), None),
      fmt(memorized.get('null_memorization'), None)))
  if plan:
    plan_rows = []
    for row in plan.objs('rows'):
      mem_row, pair_row = row.obj('memorization'), row.obj('pairs')
      plan_rows.append([
          fmt(row.get('trials')), fmt(row.get('training_hours'), 1),
          fmt(mem_row.get('stderr_rms'), 3),
          fmt(mem_row.get('stderr_quantile'), 3),
          fmt(pair_row.get('stderr_rms'), 3),
          fmt(pair_row.get('controlled'), 0),
          fmt(pair_row.get('controlled_jaccard'), 2),
          fmt(mem_row.get('controlled'), 0)])
    body += markup('<h3>Planner</h3>') + table(
        ['trials', 'training hours', 'memorization stderr (RMS)',
         'memorization stderr (q90, uncertain)', 'influence stderr (RMS)',
         'controlled pairs', 'their split-run Jaccard',
         'controlled memorized'], plan_rows,
        numeric=tuple(range(8)))
    check = plan.obj('check')
    checked = ''
    for part, name in (('memorization', 'memorized examples'),
                       ('pairs', 'pairs')):
      entry = check.obj(part)
      if entry:
        checked += (f' At this k it predicted {text(entry.get("predicted"), 1)}'
                    f' controlled {name} and the estimator measured '
                    f'{text(entry.get("measured"), 0)}'
                    + ('.' if entry.get('ok') else
                       ': the check failed' + (', so no pair prediction is '
                                               'given.' if part == 'pairs'
                                               else '.')))
    body += note('Predicted from these trials (planner.py): standard errors '
                 'shrink as 1/√k; the controlled sets by simulating the '
                 'estimator\'s tests on true effects drawn from an '
                 'empirical-Bayes fit, its mass above the null shrunk to what '
                 'the other half of the trials confirms; hours at the '
                 'measured seconds per trial, one worker.' + checked)
  return body


def convergence_table(rows):
  """The convergence rows (summary 'trust'.'convergence') as a table."""
  cells = [[fmt(r.get('view')), fmt(r.get('trials')),
            fmt(r.get('memorization_spearman'), 3),
            fmt(r.get('memorized_controlled')), fmt(r.get('memorized_raw')),
            fmt(r.get('pairs_controlled')), fmt(r.get('pairs_raw')),
            fmt(r.get('pairs_controlled_jaccard'), 3),
            fmt(r.get('pairs_raw_jaccard'), 3)] for r in rows]
  return table(['trials used', 'k', 'memorization Spearman with all',
                'controlled memorized', 'raw memorized', 'controlled pairs',
                'raw pairs', 'controlled pairs Jaccard with all',
                'raw pairs Jaccard with all'], cells,
               numeric=tuple(range(1, 9)))


def membership_table(attacks):
  """summary 'membership'.'attacks' (per attack: AUC, TPR, ...) as a table."""
  cells = [[escape(name), fmt(a.get('auc'), 3),
            fmt(_percent(a.get('tpr_at_0.1%_fpr'))),
            fmt(_percent(a.get('tpr_at_1%_fpr'))), fmt(a.get('accuracy'), 3),
            plus_minus([a.get('target_auc_mean'), a.get('target_auc_sd')]),
            fmt(a.get('scored'))] for name, a in attacks]
  return table(['attack', 'ROC AUC', 'TPR at 0.1% FPR', 'TPR at 1% FPR',
                'balanced accuracy', 'AUC per target trial',
                '(trial, example) scores'], cells, numeric=tuple(range(1, 7)))


def _percent(value):
  value = number(value)
  return None if value is None else f'{100 * value:.2f}%'


def proxies_table(rows):
  """summary 'proxies'.'rows' as proxy x trials of Spearman with all k."""
  counts = sorted({r.get('trials') for r in rows
                   if isinstance(r.get('trials'), int)})
  by_proxy = {}
  for r in rows:
    by_proxy.setdefault(str(r.get('proxy')), {})[r.get('trials')] = r
  cells = [[escape(name)] + [fmt((found.get(c) or {}).get('spearman'), 3)
                             for c in counts]
           for name, found in by_proxy.items()]
  return table(['proxy (Spearman with the memorization from all k)']
               + [f'{c} trial{"s" if c > 1 else ""}' for c in counts], cells,
               numeric=tuple(range(1, len(counts) + 1)))


def detectors_table(detectors):
  """summary 'label_issues'.'detectors' (AUC, AP per detector) as a table."""
  cells = [[escape(name), fmt(d.get('auc'), 3),
            fmt(d.get('average_precision'), 3)] for name, d in detectors]
  return table(['detector of the flipped labels', 'ROC AUC',
                'average precision'], cells, numeric=(1, 2))
