"""W/estimates: the names of its files, their writers, and what they hold.

The one place that knows the estimates folder's layout: the estimator
writes it through these functions, the experiments write their tables
through them, and the report reads what they wrote (in memory, as
`Estimates`, when the estimator builds it; from the files when it runs
alone).

    memorization.csv       index,id,label,memorization,memorization_stderr,
                           memorization_soft,k_in,k_out,consistency,
                           pvalue,qvalue,controlled (the test of H0:
                           mem <= the null, its BH/BY-adjusted p-value, 1
                           when in the controlled memorized set)
    influence_pairs.csv    train_index,test_index,train_id,test_id,label,
                           influence,influence_stderr,memorization,
                           pvalue,qvalue,raw,controlled: the raw pairs
                           (raw = 1: the paper's thresholds) and the
                           controlled ones (controlled = 1); an empty
                           p-value: not tested (estimate within 1e-4 of the
                           null, so p >= 1/2)
    convergence.csv/.png   the estimates on every 8th, 4th, 2nd trial
                           against all (assessment.py)
    influence_topk.npz     train_indices [n_test, topk], influence [n_test,
                           topk], test_ids, train_ids
    summary.json           run figures (see docs/estimators.md)
    influence_dense.npy    float16 [n, n_test] (Estimator.dense_influence)
    membership.csv/.json   LiRA (per_example.py): per example the in/out
                           Gaussians of its log-odds, lira_auc and
                           lira_separation; the attack's AUC and TPR at low
                           FPR; membership_roc.png
    proxies.csv/.json/.png how well each proxy from 1..16 trials ranks the
                           memorization from all k (Spearman, Pearson, cosine)
    heldout_pred_probs.npz pred_probs [n, C] (mean held-out class
                           probabilities), labels, ids, heldout_trials; and
                           label_issues.json (with label noise: detectors)
    <name>.csv, <name>.json, <name>.png   one table, summary and figure per
                           analysis and experiment (label_noise, removal, ...)

Every CSV is written by `csv_bytes` (rows) or `cells_bytes` (columns, each
formatted once by `cells`): a header row, then one row per record;
floats with 6 significant digits (an empty cell where a value is not
finite), everything else as `str`. JSON is strict (NaN becomes null).
"""

import csv
import dataclasses
import io
import json
import os

import numpy as np

from tf_memorization.core import files
from tf_memorization.core import storage

MEMORIZATION_CSV = 'memorization.csv'
PAIRS_CSV = 'influence_pairs.csv'
TOPK_NPZ = 'influence_topk.npz'
SUMMARY_JSON = 'summary.json'
DENSE_NPY = 'influence_dense.npy'

MEMORIZATION_HEADER = ('index', 'id', 'label', 'memorization',
                       'memorization_stderr', 'memorization_soft', 'k_in',
                       'k_out', 'consistency', 'pvalue', 'qvalue',
                       'controlled')
PAIRS_HEADER = ('train_index', 'test_index', 'train_id', 'test_id', 'label',
                'influence', 'influence_stderr', 'memorization', 'pvalue',
                'qvalue', 'raw', 'controlled')
CONVERGENCE = 'convergence'
CONVERGENCE_PNG = 'convergence.png'
CONVERGENCE_HEADER = ('view', 'trials', 'memorization_spearman',
                      'memorized_raw', 'memorized_controlled', 'pairs_raw',
                      'pairs_controlled', 'pairs_raw_jaccard',
                      'pairs_controlled_jaccard')
RATIO_SWEEP_HEADER = ('subset_ratio', 'effective_ratio', 'trials',
                      'mean_test_accuracy', 'examples_memorization_ge_0.25',
                      'median_stderr', 'mean_stderr', 'spearman_with_main',
                      'lemma_2_1_bound')

# The analyses and experiments, by kind: (title, stem of their files).
TITLES = {
    'removal': 'Removal of memorized examples',
    'ablation': 'Last-layer ablation',
    'leave_one_out': 'Estimate vs direct leave-one-out',
    'ratio_sweep': 'Subset-ratio sweep',
}
# Figures the analyses and experiments write, which the report shows.
ABLATION_PNG = 'ablation_histogram.png'
REMOVAL_PNG = 'removal.png'
LABEL_NOISE_PNG = 'label_noise_roc.png'
LEAVE_ONE_OUT_PNG = 'leave_one_out.png'
# per_example.py's: LiRA, the proxy table, held-out class probabilities.
MEMBERSHIP = 'membership'
MEMBERSHIP_PNG = 'membership_roc.png'
PROXIES = 'proxies'
PROXIES_PNG = 'proxies.png'
PRED_PROBS_NPZ = 'heldout_pred_probs.npz'
LABEL_ISSUES = 'label_issues'
FIGURES = (ABLATION_PNG, REMOVAL_PNG, LABEL_NOISE_PNG, LEAVE_ONE_OUT_PNG,
           CONVERGENCE_PNG, MEMBERSHIP_PNG, PROXIES_PNG)
# Each analysis and experiment writes <kind>.csv (its table) and
# <kind>.json (its summary): write_table(output_dir, kind, ...).
LABEL_NOISE = 'label_noise'
MEMORIZATION_VS_INFLUENCE = 'memorization_vs_influence'


def estimates_dir(workdir):
  return os.path.join(workdir, files.ESTIMATES_DIR)


def _cell(value):
  if isinstance(value, (float, np.floating)):
    return f'{value:.6g}' if np.isfinite(value) else ''
  return str(value)


def _csv(header, rows_of_cells):
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(header)
  writer.writerows(rows_of_cells)
  return buffer.getvalue().encode()


def csv_bytes(header, rows):
  """A CSV file of `rows` under `header`, as bytes (the module docstring
  says how values are written)."""
  return _csv(header, ([_cell(v) for v in row] for row in rows))


def cells(column):
  """A column (numpy array or list) as the CSV cells written for it.

  Each distinct value is formatted once (a column of n = 1.28M examples
  holds far fewer: memorization takes O(k^2) values), integers in C."""
  values = np.asarray(column)
  if values.dtype.kind in 'iu':
    return values.astype(str).tolist()
  if (values.dtype.kind != 'f' or values.ndim != 1 or len(values) < 1024 or
      len(np.unique(values[:4096])) > 2048):  # mostly distinct: no gain
    return [_cell(v) for v in values.tolist()]
  # Distinct bit patterns (0.0 and -0.0 are written differently).
  bits = np.ascontiguousarray(values).view(f'u{values.itemsize}')
  distinct, inverse = np.unique(bits, return_inverse=True)
  formatted = np.array([_cell(v) for v in
                        distinct.view(values.dtype).tolist()], object)
  return formatted[inverse.ravel()].tolist()


def cells_bytes(header, columns):
  """The same, of equal-length columns already formatted by `cells` (the
  estimator keeps them: as_written reads the values back from them)."""
  return _csv(header, zip(*columns))


def as_written(column_cells):
  """The float64 values a reader gets back from a column's cells: 6
  significant digits, NaN where the value was not finite. The report built
  in memory shows exactly what one built from the files shows."""
  return np.array([float(c) if c else np.nan for c in column_cells],
                  np.float64)


def json_text(value):
  """Strict JSON (NaN and infinities as null), sorted keys, indented."""
  return json.dumps(storage.json_safe(value), indent=2, sort_keys=True,
                    allow_nan=False)


def write_table(output_dir, stem, header, rows, summary):
  """`stem`.csv (the rows) and `stem`.json (the summary) in `output_dir`."""
  storage.atomic_replace(os.path.join(output_dir, f'{stem}.csv'),
                         csv_bytes(header, rows))
  storage.atomic_write_text(os.path.join(output_dir, f'{stem}.json'),
                            json_text(summary))


@dataclasses.dataclass
class Estimates:
  """What the estimate binary wrote to W/estimates, as a reader gets it.

  The estimator hands this to the report in memory; the report run alone
  reads the same from the files (report_inputs). Float columns hold the
  values as written (as_written), so both reports are the same.

  Attributes:
    summary: summary.json's object.
    memorization, stderr, consistency: float64 [n] (NaN: no estimate).
    k_in, k_out: int64 [n].
    pairs: {'train', 'test': int64 indices; 'influence', 'stderr', 'qvalue':
      float64; 'raw', 'controlled': bool (the last three absent in an
      earlier version's estimates)}.
    topk_indices: int64 [n_test, topk] (-1: none); topk_influence float64.
    train_labels, original_train_labels, test_labels, train_ids, test_ids:
      the dataset's (W/dataset.npz).
  """
  summary: dict
  memorization: np.ndarray
  stderr: np.ndarray
  consistency: np.ndarray
  k_in: np.ndarray
  k_out: np.ndarray
  pairs: dict
  topk_indices: np.ndarray
  topk_influence: np.ndarray
  train_labels: np.ndarray
  original_train_labels: np.ndarray
  test_labels: np.ndarray
  train_ids: np.ndarray
  test_ids: np.ndarray
  qvalue: np.ndarray = None      # float64 [n] (None: an older estimate)
  controlled: np.ndarray = None  # bool [n]: the controlled memorized set

  def controlled_pairs(self):
    """{(train, test)} of the controlled pairs (empty for an earlier
    version's estimates, which have none)."""
    if self.pairs.get('controlled') is None:
      return set()
    chosen = np.asarray(self.pairs['controlled'], bool)
    return set(zip(np.asarray(self.pairs['train'])[chosen].tolist(),
                   np.asarray(self.pairs['test'])[chosen].tolist()))


def fixed(value, digits=3):
  """A figure with `digits` decimals, or 'n/a' (None or NaN)."""
  if value is None or not np.isfinite(value):
    return 'n/a'
  return f'{value:.{digits}f}'


def _percent(value):
  return 'n/a' if value is None else f'{value:.0%}'


def _count(value):
  return 'n/a' if value is None else value


def format_summary(summary, output_dir):
  """The table the estimate binary prints at the end of a run (n/a where
  a figure is None or NaN: e.g. memorization of records without train
  predictions)."""
  ratios = summary['subset_ratios']
  rows = [
      ('trials (k)', summary['num_trials']),
      ('train / test examples',
       f'{summary["num_train"]} / {summary["num_test"]}'),
      ('subset ratio(s)', ', '.join(f'{r:g}' for r in ratios) if ratios
       else 'n/a (masks not drawn by a subset design)'),
      ('mean accuracy train / held-out / test',
       f'{fixed(summary["mean_train_accuracy"], 4)} / '
       f'{fixed(summary["mean_heldout_accuracy"], 4)} / '
       f'{fixed(summary["mean_test_accuracy"], 4)}'),
  ]
  for t, count in summary['memorization_counts'].items():
    rows.append((f'examples with memorization >= {t}', _count(count)))
  rows += [
      ('examples with no estimate (never in or out)',
       summary['undefined_memorization']),
      ('median / max memorization stderr',
       f'{fixed(summary["median_memorization_stderr"], 4)} / '
       f'{fixed(summary["max_memorization_stderr"], 4)}'),
      ('max stderr where memorization >= threshold',
       fixed(summary['max_stderr_of_memorized'], 4)),
      ('Lemma 2.1 bound on E[(est - true)^2]',
       (('n/a (several ratios)' if ratios else 'n/a (no subset design)')
        if summary['lemma_2_1_bound'] is None
        else f'{summary["lemma_2_1_bound"]:.4f}')),
      ('high-influence pairs (paper thresholds)', summary['num_pairs']),
  ]
  trust = summary.get('trust')
  if trust:
    pairs, memorized = trust['pairs'], trust['memorized']
    rows.append((f'controlled pairs (FDR {pairs["level"]:g}, H0 infl <= '
                 f'{pairs["null_influence"]:g})', pairs['controlled']))
    if 'testable' in pairs:  # earlier estimates do not say
      rows.append(('pair family: testable / all',
                   f'{pairs["testable"]:,} / {pairs["family"]:,}'))
    if memorized is None:  # records without train predictions
      rows.append(('controlled memorized', 'n/a (no train predictions)'))
    else:
      rows.append((f'controlled memorized (FDR {memorized["level"]:g}, H0 '
                   f'mem <= {memorized["null_memorization"]:g})',
                   memorized['controlled']))
    null = trust.get('null')
    if null:
      raw_memorized = null['raw_memorized']
      rows += [('null: raw pairs by chance (est. FDP of raw)',
                f'{null["raw_pairs"]:.1f} '
                f'({_percent(null["pairs_fdp"])})'),
               ('null: raw memorized by chance (est. FDP of raw)',
                'n/a' if raw_memorized is None else
                f'{raw_memorized:.1f} ({_percent(null["memorized_fdp"])})')]
  skipped = (summary.get('diverged_trials') or {}).get('skipped')
  if skipped:
    rows.append(('diverged trials left out', skipped))
  split = summary['split_half']
  if split:
    rows += [('split-half memorization Pearson / Spearman',
              f'{fixed(split["memorization_pearson"])} / '
              f'{fixed(split["memorization_spearman"])}'),
             ('split-half pair Jaccard', f'{split["pairs_jaccard"]:.3f}')]
    if 'controlled_pairs_jaccard' in split:
      rows.append(('split-half controlled pair Jaccard',
                   f'{fixed(split["controlled_pairs_jaccard"])} ('
                   f'{split["controlled_pairs_per_half"][0]} / '
                   f'{split["controlled_pairs_per_half"][1]} pairs)'))
  lira = ((summary.get(MEMBERSHIP) or {}).get('attacks') or {}).get('online')
  if lira:
    rows.append(('LiRA AUC / TPR at 1% FPR (online)',
                 f'{fixed(lira["auc"])} / '
                 f'{fixed(100 * (lira["tpr_at_1%_fpr"] or np.nan), 2)}%'))
  width = max(len(r[0]) for r in rows)
  lines = [f'Estimates written to {output_dir}']
  if (summary.get('planner') or {}).get('advice'):
    lines.append(summary['planner']['advice'])
  lines += [f'  {name.ljust(width)}  {value}' for name, value in rows]
  return '\n'.join(lines)
