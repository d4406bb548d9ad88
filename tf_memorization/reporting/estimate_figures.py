"""The figures the estimate writes to W/estimates, beside its tables.

The statistics compute (stats/, estimation/, experiments/, published/) and
hand their numbers here; this module draws them and writes each PNG
atomically. Two drawing styles, kept as they were so that the files stay
byte for byte the same: pyplot on the Agg backend, saved with a tight
bounding box at 110 dpi (label noise, convergence, the experiments, the
comparison's scatter), and the report's Figure canvas at its DPI (the
membership ROC, the proxies; figures.py).
"""

import collections
import io
import math
import os

import numpy as np

from tf_memorization.core import storage
from tf_memorization.reporting import figures
from tf_memorization.stats import proxies as proxies_lib
from tf_memorization.workdir import estimates


def pyplot():
  """matplotlib's pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path, dpi=110):
  """Writes a matplotlib figure as a PNG, atomically, and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=dpi, bbox_inches='tight')
  storage.atomic_replace(path, buffer.getvalue())
  pyplot().close(fig)


def _formatted(value, form):
  """`value` formatted, or a dash when it is not a finite number."""
  return form.format(value) if np.isfinite(value) else '–'


def label_noise_roc(path, report):
  """The ROC of finding flipped labels by memorization
  (analyses.label_noise_report's curve)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(report['roc_fpr'], report['roc_tpr'],
          label=f'memorization (AUC {report["auc"]:.3f})')
  ax.plot([0, 1], [0, 1], color='grey', lw=0.8)
  ax.set_xlabel('false positive rate')
  ax.set_ylabel('true positive rate')
  ax.set_title('Finding flipped labels by memorization')
  ax.legend(loc='lower right')
  save_figure(fig, path)


def convergence(path, rows):
  """Agreement with all trials and set sizes against trials used
  (assessment.py's convergence rows)."""
  plt = pyplot()
  trials = [row['trials'] for row in rows]
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
  for key, label in (('memorization_spearman', 'memorization Spearman'),
                     ('pairs_raw_jaccard', 'raw pairs Jaccard'),
                     ('pairs_controlled_jaccard', 'controlled pairs Jaccard')):
    left.plot(trials, np.array([row[key] for row in rows], np.float64),
              marker='o', label=label)
  left.set_xscale('log', base=2)
  left.set_ylim(-0.02, 1.02)
  left.set_xlabel('trials')
  left.set_title('Agreement with all trials')
  left.legend(fontsize=8)
  for key, label in (('pairs_raw', 'raw pairs'),
                     ('pairs_controlled', 'controlled pairs'),
                     ('memorized_raw', 'raw memorized'),
                     ('memorized_controlled', 'controlled memorized')):
    right.plot(trials, [row[key] for row in rows], marker='o', label=label)
  right.set_xscale('log', base=2)
  right.set_yscale('symlog', linthresh=1)  # an empty set shows as 0
  right.set_xlabel('trials')
  right.set_title('Set sizes')
  right.legend(fontsize=8)
  save_figure(fig, path)


def ablation_histogram(path, variants):
  """Memorization of the full network against each retrained top:
  variants is [(entry with 'variant', memorization values)]."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  bins = np.linspace(-0.2, 1.0, 25)
  for entry, values in variants:
    ax.hist(values[np.isfinite(values)], bins=bins, alpha=0.5,
            label=entry['variant'], log=True)
  ax.set_xlabel('memorization estimate')
  ax.set_ylabel('training examples (log)')
  ax.legend()
  ax.set_title('Memorization: full network vs retrained top')
  save_figure(fig, path)


def removal(path, table):
  """Test accuracy against examples removed, memorized against random
  (the removal experiment's table)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for condition, style in (('memorized', 'o-'), ('random', 's--')):
    entries = [e for e in table if e['condition'] == condition]
    if not entries:
      continue
    ax.errorbar([e['num_removed'] for e in entries],
                [e['test_accuracy'][0] for e in entries],
                yerr=[e['test_accuracy'][1] for e in entries], fmt=style,
                capsize=3, label=f'{condition} removed')
  full = [e for e in table if e['condition'] == 'full']
  if full:
    ax.axhline(full[0]['test_accuracy'][0], color='grey', lw=0.8,
               label='full training set')
  ax.set_xlabel('training examples removed')
  ax.set_ylabel('test accuracy')
  ax.legend()
  ax.set_title('Removing memorized vs random examples')
  save_figure(fig, path)


def leave_one_out(path, rows, middle_band):
  """Direct leave-one-out memorization against the subsampled estimate,
  with both standard errors (the leave-one-out experiment's rows)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  low, high = middle_band
  ax.axvspan(low, high, color='tab:blue', alpha=0.08, lw=0,
             label=f'middle band {low:g}-{high:g}')
  values = np.array([row[1:5] for row in rows], np.float64).reshape(-1, 4)
  inside = np.array([row[8] for row in rows], bool)
  for select, colour, label in ((inside, 'tab:blue', 'in the band'),
                                (~inside, 'tab:grey', 'outside')):
    if select.any():
      loo, loo_se, sub, sub_se = values[select].T
      ax.errorbar(sub, loo, xerr=sub_se, yerr=loo_se, fmt='o', ms=4,
                  capsize=2, color=colour, label=label)
  ax.plot([-1, 1], [-1, 1], color='grey', lw=0.8)
  finite = values[:, [0, 2]][np.isfinite(values[:, [0, 2]])]
  bottom = min(-0.3, float(finite.min()) - 0.05) if finite.size else -0.3
  ax.set_xlim(bottom, 1.05)
  ax.set_ylim(bottom, 1.05)
  ax.set_xlabel('subsampled estimate')
  ax.set_ylabel('direct leave-one-out')
  ax.set_title('Memorization: estimate vs leave-one-out')
  ax.legend(loc='upper left', fontsize='small')
  save_figure(fig, path)


def memorization_scatter(path, mine, theirs, spearman, published):
  """Our memorization against the released one (the compare binary)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 5.5))
  ok = np.isfinite(mine) & np.isfinite(theirs)
  count = max(int(ok.sum()), 1)  # fewer points, larger and darker dots
  ax.scatter(theirs[ok], mine[ok], s=min(16.0, max(1.0, 20_000 / count)),
             alpha=min(0.8, max(0.1, 2_000 / count)), linewidths=0)
  both = np.r_[theirs[ok], mine[ok]]
  low, high = (float(both.min()), float(both.max())) if len(both) else (0, 1)
  ax.plot([low, high], [low, high], 'k--', linewidth=1, label='identity')
  ax.set_xlabel(f'published memorization ({os.path.basename(published)})')
  ax.set_ylabel('our memorization')
  ax.set_title(f'Memorization, Spearman {estimates.fixed(spearman)} '
               f'({int(ok.sum())} examples)')
  ax.legend(loc='upper left')
  save_figure(fig, path)


def membership_roc(path, evaluations):
  """Writes a PNG of the ROC curves on log-log axes (as in the LiRA paper).

  Args:
    path: the PNG's path (local or a tf.io.gfile URL), written atomically.
    evaluations: {name: Evaluation}, one curve each; the legend gives each
      AUC and TPR at 0.1% FPR.

  Returns:
    path.
  """
  if not evaluations:
    raise ValueError('membership_roc needs at least one Evaluation to draw.')
  fig = figures.figure(5.5, 5.0)
  ax = fig.add_subplot()
  lowest = 1.0
  for name, evaluation in evaluations.items():
    shown = (evaluation.fpr > 0) & (evaluation.tpr > 0)
    if shown.any():
      lowest = min(lowest, float(evaluation.fpr[shown].min()),
                   float(evaluation.tpr[shown].min()))
    tpr = evaluation.tpr_at.get(0.001, math.nan)
    label = (f'{name}: AUC {_formatted(evaluation.auc, "{:.3f}")}, '
             f'TPR@0.1% {_formatted(tpr, "{:.2%}")}')
    ax.plot(evaluation.fpr[shown], evaluation.tpr[shown], lw=1.2,
            label=figures.figure_text(label))
  lowest = min(lowest, 1e-3) if lowest < 1 else 1e-5
  ax.plot([lowest, 1], [lowest, 1], color='grey', ls='--', lw=0.8,
          label='chance')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlim(lowest, 1)
  ax.set_ylim(lowest, 1)
  ax.set_xlabel('false positive rate')
  ax.set_ylabel('true positive rate')
  ax.set_title('Membership inference (LiRA): each trial the target')
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  files = {}
  figures.save(fig, files, 'roc.png')
  storage.atomic_replace(path, files['roc.png'])
  return path


def proxies(path, rows):
  """Spearman against trials used (log2 axis), one line per proxy, written
  as a PNG to `path` (local or a tf.io.gfile URL). Returns `path`, or None
  (nothing written) when no row has a finite Spearman."""
  curves = collections.OrderedDict()
  for r in rows:
    if np.isfinite(r['spearman']):
      curves.setdefault(r['proxy'], []).append((r['trials'], r['spearman']))
  if not curves:
    return None
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  fig = figures.figure(6.5, 4.0)
  ax = fig.add_subplot()
  for name, points in curves.items():
    trials, values = zip(*sorted(points))
    ax.plot(trials, values, marker='o',
            ls='--' if name == proxies_lib.REFERENCE else '-',
            color='black' if name == proxies_lib.REFERENCE else None,
            label=figures.figure_text(proxies_lib.TITLES.get(name, name)))
  counts = sorted({t for points in curves.values() for t, _ in points})
  ax.set_xscale('log', base=2)
  ax.set_xticks(counts)
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
  ax.xaxis.set_minor_locator(ticker.NullLocator())
  if len(counts) == 1:
    ax.set_xlim(counts[0] / 2, counts[0] * 2)
  low = min(v for points in curves.values() for _, v in points)
  ax.set_ylim(min(0.0, low) - 0.05, 1.0)
  ax.axhline(0.0, color='grey', lw=0.6)
  ax.set_xlabel('trials used (the first K, log scale)')
  ax.set_ylabel('Spearman with memorization (all trials)')
  ax.set_title('Proxies of memorization from few trials')
  ax.legend(fontsize=8)
  fig.tight_layout()
  files = {}
  name = figures.save(fig, files, 'proxies.png')
  storage.atomic_replace(path, files[name])
  return path
