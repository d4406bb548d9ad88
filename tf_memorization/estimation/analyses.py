"""Analyses of the scores that need no retraining: how well memorization
finds flipped labels (label noise), and memorization against the largest
influence of each training example. Each writes a table, a summary and,
where it helps, a figure to the estimates folder.
"""

import os

import numpy as np

from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.workdir import estimates


def label_noise_report(memorization, flipped_mask):
  """How well memorization ranks flipped labels first (ROC AUC, precision).

  Args:
    memorization: float [n] (NaN: not estimable, left out).
    flipped_mask: bool [n], True where label noise flipped the label.

  Returns:
    dict with auc, precision_at_flipped, counts, and the ROC curve points.
  """
  ok = np.isfinite(memorization)
  values, positive = memorization[ok], flipped_mask[ok]
  num_pos, num_neg = int(positive.sum()), int((~positive).sum())
  report = {'num_flipped': int(flipped_mask.sum()),
            'num_flipped_estimable': num_pos, 'num_clean_estimable': num_neg}
  if not num_pos or not num_neg:
    report.update(auc=float('nan'), precision_at_flipped=float('nan'),
                  roc_fpr=[], roc_tpr=[])
    return report
  auc, fpr, tpr = scores.roc(values, positive)
  order = np.argsort(-values, kind='stable')
  precision = float(positive[order[:num_pos]].mean())
  report.update(auc=float(auc), precision_at_flipped=precision, roc_fpr=fpr,
                roc_tpr=tpr)
  return report


def write_label_noise(output_dir, report, log):
  header = ['false_positive_rate', 'true_positive_rate']
  rows = list(zip(report['roc_fpr'], report['roc_tpr']))
  summary = {k: v for k, v in report.items() if not k.startswith('roc_')}
  estimates.write_table(output_dir, estimates.LABEL_NOISE, header, rows,
                        summary)
  if rows:
    estimate_figures.label_noise_roc(
        os.path.join(output_dir, estimates.LABEL_NOISE_PNG), report)
  log(f'Label noise: {report["num_flipped"]} flipped labels; memorization '
      f'ranks them with ROC AUC {report["auc"]:.3f}, precision at '
      f'{report["num_flipped_estimable"]}: '
      f'{report["precision_at_flipped"]:.3f}.')


def memorization_vs_influence(output_dir, memorization, max_influence, log,
                              scope='all'):
  """memorization_vs_influence.csv / .json: each training example's
  memorization against its largest influence on a test example (of its
  label under influence scope 'same_label')."""
  pearson, spearman = ranks.correlations(memorization, max_influence)
  rows = [[i, float(m), float(x)] for i, (m, x) in
          enumerate(zip(memorization, max_influence))]
  summary = {'pearson': pearson, 'spearman': spearman}
  estimates.write_table(output_dir, estimates.MEMORIZATION_VS_INFLUENCE,
                        ['index', 'memorization', 'max_influence'], rows,
                        summary)
  where = 'a test example' + (' of its label' if scope == 'same_label'
                              else '')
  log(f'Memorization vs largest influence on {where}: Pearson '
      f'{pearson:.3f}, Spearman {spearman:.3f}.')
  return summary


def write_convergence(output_dir, rows, log):
  """convergence.csv / .json / .png: the estimates on every 8th, 4th and
  2nd trial against all of them (assessment.py's rows)."""
  header = estimates.CONVERGENCE_HEADER
  table = [[row[name] for name in header] for row in rows]
  estimates.write_table(output_dir, estimates.CONVERGENCE, header, table,
                        {'rows': rows})
  estimate_figures.convergence(
      os.path.join(output_dir, estimates.CONVERGENCE_PNG), rows)
  last = rows[-2] if len(rows) > 1 else rows[-1]
  fixed = estimates.fixed
  log(f'Convergence: on {last["trials"]} of {rows[-1]["trials"]} trials, '
      f'memorization Spearman {fixed(last["memorization_spearman"])}, raw '
      f'pair Jaccard {fixed(last["pairs_raw_jaccard"])}, controlled pair '
      f'Jaccard {fixed(last["pairs_controlled_jaccard"])} with all.')

