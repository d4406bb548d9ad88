"""Analyses of the scores that need no retraining: how well memorization
finds flipped labels (label noise), and memorization against the largest
influence of each training example. Each writes a table, a summary and,
where it helps, a figure to the estimates folder.
"""

import os

import numpy as np

from tf_memorization import estimates
from tf_memorization import scores


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
    plt = estimates.pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(report['roc_fpr'], report['roc_tpr'],
            label=f'memorization (AUC {report["auc"]:.3f})')
    ax.plot([0, 1], [0, 1], color='grey', lw=0.8)
    ax.set_xlabel('false positive rate')
    ax.set_ylabel('true positive rate')
    ax.set_title('Finding flipped labels by memorization')
    ax.legend(loc='lower right')
    estimates.save_figure(
        fig, os.path.join(output_dir, estimates.LABEL_NOISE_PNG))
    plt.close(fig)
  log(f'Label noise: {report["num_flipped"]} flipped labels; memorization '
      f'ranks them with ROC AUC {report["auc"]:.3f}, precision at '
      f'{report["num_flipped_estimable"]}: '
      f'{report["precision_at_flipped"]:.3f}.')


def memorization_vs_influence(output_dir, memorization, max_influence, log):
  pearson, spearman = scores.rank_correlations(memorization, max_influence)
  rows = [[i, float(m), float(x)] for i, (m, x) in
          enumerate(zip(memorization, max_influence))]
  summary = {'pearson': pearson, 'spearman': spearman}
  estimates.write_table(output_dir, estimates.MEMORIZATION_VS_INFLUENCE,
               ['index', 'memorization', 'max_influence'], rows, summary)
  log(f'Memorization vs largest influence on a test example: Pearson '
      f'{pearson:.3f}, Spearman {spearman:.3f}.')
  return summary


def write_convergence(output_dir, rows, log):
  """convergence.csv / .json / .png: the estimates on every 8th, 4th and
  2nd trial against all of them (assessment.py's rows)."""
  header = estimates.CONVERGENCE_HEADER
  table = [[row[name] for name in header] for row in rows]
  estimates.write_table(output_dir, estimates.CONVERGENCE, header, table,
                        {'rows': rows})
  plt = estimates.pyplot()
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
  estimates.save_figure(fig, os.path.join(output_dir,
                                          estimates.CONVERGENCE_PNG))
  plt.close(fig)
  last = rows[-2] if len(rows) > 1 else rows[-1]
  fixed = estimates.fixed
  log(f'Convergence: on {last["trials"]} of {rows[-1]["trials"]} trials, '
      f'memorization Spearman {fixed(last["memorization_spearman"])}, raw '
      f'pair Jaccard {fixed(last["pairs_raw_jaccard"])}, controlled pair '
      f'Jaccard {fixed(last["pairs_controlled_jaccard"])} with all.')

