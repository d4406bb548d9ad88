r"""The estimate binary: scores from the trial records of a workdir.

    python -m tf_memorization.estimate --workdir=W [--gin_file=F.gin]
        [--gin_bindings='Estimator.topk = 20']

Loads W/trials (records.load), computes memorization (with standard errors,
in/out counts, the soft variant and the consistency score), the influence of
every training example on every test example (blocked: top-k per test example
and the pairs over the paper's thresholds, with standard errors), how
trustworthy the numbers are (Lemma 2.1 bound, median standard error,
split-half consistency), and writes W/estimates/:

    memorization.csv       index,id,label,memorization,memorization_stderr,
                           memorization_soft,k_in,k_out,consistency
    influence_pairs.csv    train_index,test_index,train_id,test_id,label,
                           influence,influence_stderr,memorization
    influence_topk.npz     train_indices [n_test, topk], influence [n_test, topk]
    summary.json           run figures (see README)
    influence_dense.npy    float16 [n, n_test], only with
                           Estimator.dense_influence = True

and, unless Estimator.report = False, an HTML report of them (report.py):
W/report/index.html (Estimator.report_dir; with --output_dir, OUTPUT_DIR/report).
"""

import csv
import io
import json
import os
import time
import uuid

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import gin  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization import errors  # pylint: disable=g-import-not-at-top
from tf_memorization import experiments as experiments_lib  # pylint: disable=g-import-not-at-top
from tf_memorization import records as records_lib  # pylint: disable=g-import-not-at-top
from tf_memorization import scores  # pylint: disable=g-import-not-at-top

def define_flags():
  """Defines the flags; only when run as a binary, so that the library
  modules can be imported together (absl flags are global)."""
  flags.DEFINE_multi_string('gin_file', [], 'gin config files.')
  flags.DEFINE_multi_string(
      'gin_bindings', [], 'gin bindings, e.g. "Estimator.topk = 20".')
  flags.DEFINE_string('workdir', None, 'The train binary\'s workdir.')
  flags.DEFINE_string(
      'output_dir', None, 'Where the estimates go (default: WORKDIR/estimates).')
  flags.DEFINE_string(
      'data_dir', None, 'tfds data dir for the experiments and the report\'s '
      'images (same as binding load_dataset.data_dir; a workdir\'s own '
      'config never chooses it).')


ESTIMATES_DIR = 'estimates'
MEMORIZATION_CSV = 'memorization.csv'
PAIRS_CSV = 'influence_pairs.csv'
TOPK_NPZ = 'influence_topk.npz'
SUMMARY_JSON = 'summary.json'
DENSE_NPY = 'influence_dense.npy'


@gin.configurable
class Estimator:
  """Which scores to compute and how (a gin configurable).

  Args:
    topk: training examples kept per test example.
    influence_threshold: pairs need influence >= this (paper: 0.15).
    memorization_threshold: pairs need the training example's memorization
      >= this (paper: 0.25).
    same_label: pairs need the same label (paper: yes).
    memorization_thresholds: the summary counts examples over each.
    block_size: training examples per influence matrix product.
    dense_influence: also write the dense float16 influence matrix.
    split_half: estimate from two disjoint halves of the trials and report
      their agreement (costs one more influence pass).
    influence_scores: 'correct' (0/1, the paper) or 'prob' (soft).
    experiments: which retraining experiments to run after the scores:
      any of 'ablation', 'removal', 'leave_one_out', 'ratio_sweep'
      (configured by AblationExperiment, RemovalExperiment,
      LeaveOneOutExperiment, SubsetRatioSweep).
    report: write the HTML report (report.py) at the end of the run.
    report_dir: its folder (None: W/report, or OUTPUT_DIR/report when the
      estimates go to another --output_dir). Only the caller's gin files
      and bindings may set it: a workdir's config never chooses a path.
    diverged_trials: trials whose model diverged (flagged in their records
      by the train binary): 'refuse' (one error naming them) or 'skip'
      (estimate without them; summary.json counts them).
  """

  def __init__(self, topk=10, influence_threshold=0.15,
               memorization_threshold=0.25, same_label=True,
               memorization_thresholds=(0.1, 0.25, 0.5, 0.75),
               block_size=2048, dense_influence=False, split_half=True,
               influence_scores='correct', experiments=(), report=True,
               report_dir=None, diverged_trials='refuse'):
    name = 'Estimator.'
    errors.choice(name + 'influence_scores', influence_scores,
                  ('correct', 'prob'))
    self.topk = errors.integer(name + 'topk', topk, minimum=0)
    self.influence_threshold = errors.number(name + 'influence_threshold',
                                             influence_threshold)
    self.memorization_threshold = errors.number(
        name + 'memorization_threshold', memorization_threshold)
    self.same_label = errors.boolean(name + 'same_label', same_label)
    self.memorization_thresholds = errors.sequence(
        name + 'memorization_thresholds', memorization_thresholds,
        errors.number)
    self.block_size = errors.integer(name + 'block_size', block_size,
                                     minimum=1)
    self.dense_influence = errors.boolean(name + 'dense_influence',
                                          dense_influence)
    self.split_half = errors.boolean(name + 'split_half', split_half)
    self.influence_scores = influence_scores
    experiments = errors.sequence(name + 'experiments', experiments,
                                  errors.string)
    unknown = set(experiments) - set(experiments_lib.KINDS)
    if unknown:
      raise ValueError(f'Estimator.experiments: unknown {sorted(unknown)}; '
                       f'choose from {experiments_lib.KINDS}.')
    self.experiments = tuple(experiments)
    self.report = errors.boolean(name + 'report', report)
    self.report_dir = errors.string(name + 'report_dir', report_dir,
                                    allow_none=True)
    self.diverged_trials = errors.choice(name + 'diverged_trials',
                                         diverged_trials, ('refuse', 'skip'))

  def _test_values(self, loaded, rows=slice(None)):
    if self.influence_scores == 'prob':
      return loaded.test_prob[rows].astype(np.float32)
    return loaded.test_correct[rows]

  def influence_of(self, loaded, mem_values, rows=slice(None), topk=None,
                   dense_path=None, progress=None):
    return scores.influence(
        loaded.masks[rows], self._test_values(loaded, rows),
        loaded.train_labels, loaded.test_labels, mem_values,
        topk=self.topk if topk is None else topk,
        influence_threshold=self.influence_threshold,
        memorization_threshold=self.memorization_threshold,
        same_label=self.same_label, block_size=self.block_size,
        dense_path=dense_path, progress=progress)

  def split_half_agreement(self, loaded):
    """Memorization and pair sets from even vs odd trials, and agreement."""
    halves = []
    for rows in (slice(0, None, 2), slice(1, None, 2)):
      mem = scores.memorization(loaded.masks[rows], loaded.train_correct[rows])
      infl = self.influence_of(loaded, mem.memorization, rows, topk=0)
      halves.append((mem.memorization,
                     set(zip(infl.pair_train.tolist(), infl.pair_test.tolist()))))
    pearson, spearman = scores.rank_correlations(halves[0][0], halves[1][0])
    k = loaded.num_trials
    return {'trials_per_half': [len(range(0, k, 2)), len(range(1, k, 2))],
            'memorization_pearson': pearson,
            'memorization_spearman': spearman,
            'pairs_per_half': [len(halves[0][1]), len(halves[1][1])],
            'pairs_jaccard': scores.jaccard(halves[0][1], halves[1][1])}


def _check_estimable(workdir, loaded, mem):
  """Refuses trials that leave no example both in and out of some trial."""
  k = loaded.num_trials
  designed = max([m.get('num_trials') or 0 for m in loaded.metadata] + [2])
  train = (f'python -m tf_memorization.train --workdir={workdir} with the '
           'same flags')
  if k < 2:
    raise cli.UserError(
        f'{k} trial record(s) in {workdir}: estimates need at least 2 trials, '
        'so that each example is in some trials and held out of others. '
        f'Train the other {designed - k} of the run\'s {designed} trials '
        f'({train}; it resumes).')
  if np.all(mem.k_in == 0) or np.all(mem.k_out == 0):
    where = 'held out of' if np.all(mem.k_out == 0) else 'included in'
    more = (f'Train the other {designed - k} of the run\'s {designed} trials '
            f'({train}; it resumes)' if designed > k else
            'Train more trials: raise SubsetDesign.num_trials (the '
            'independent design grows in place; the balanced design needs a '
            'new --workdir)')
    raise cli.UserError(
        f'No training example is {where} any of the {k} trials in {workdir}, '
        'so nothing can be estimated: each example needs at least 1 trial '
        f'that includes it and 1 that holds it out. {more}.')


def _csv_bytes(header, columns):
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(header)
  formatted = []
  for column in columns:
    column = np.asarray(column)
    if column.dtype.kind == 'f':
      formatted.append(['' if not np.isfinite(v) else f'{v:.6g}'
                        for v in column.tolist()])
    else:
      formatted.append(column.tolist())
  writer.writerows(zip(*formatted))
  return buffer.getvalue().encode()


_replace = records_lib.atomic_replace


def _max_or_none(values):
  return float(np.max(values)) if len(values) else None


def _mean_metric(loaded, key):
  values = [m.get('metrics', {}).get(key, np.nan) for m in loaded.metadata]
  return float(np.nanmean(values)) if values else float('nan')


def run(workdir, gin_files=(), gin_bindings=(), output_dir=None, data_dir=None,
        log=print):
  """Computes every score for `workdir` and writes the outputs.

  Everything is written to a temporary folder beside the estimates folder
  and swapped in once the whole run succeeded (cli.staged_output), so
  a failed or killed estimate leaves the earlier estimates (and report) as
  they were, never a mix of two runs.
  """
  if not workdir:
    raise cli.UserError('--workdir is required: the train binary\'s workdir.')
  # The trials' own config comes first, so that experiments retrain exactly
  # the models the trials trained; the user's files and bindings follow.
  # Locations (data_dir, report_dir) come only from the caller: the
  # workdir's config may not bind them (cli.check_bindings_only).
  trial_config = os.path.join(workdir, records_lib.CONFIG_FILE)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config_files = ([trial_config] if tf.io.gfile.exists(trial_config) else [])
  bindings = list(gin_bindings)
  if data_dir:
    bindings.append(f'load_dataset.data_dir = {data_dir!r}')
  cli.parse_gin(config_files + list(gin_files), bindings)
  try:
    estimator = Estimator()
  except (ValueError, TypeError) as e:
    raise cli.UserError(f'Bad Estimator config: {e}'.replace('\n', ' ')) from e
  for kind in estimator.experiments:  # a bad binding fails now, not later
    experiment = experiments_lib.BY_KIND[kind]
    try:
      experiment()
    except (ValueError, TypeError) as e:
      if isinstance(e, cli.user_error_types()):
        raise
      raise cli.UserError(f'Bad {experiment.__name__} config: '
                          f'{e}'.replace('\n', ' ')) from e
  report_dir = estimator.report_dir or os.path.join(output_dir or workdir,
                                                    'report')
  flag = '--output_dir' if output_dir else '--workdir'
  final = output_dir or os.path.join(workdir, ESTIMATES_DIR)
  # A folder given by flag may be anyone's: replaced only if it is ours.
  with cli.staged_output(final, flag,
                         SUMMARY_JSON if output_dir else None) as stage:
    summary = _estimate(workdir, stage, final, estimator, log)
    if estimator.report:
      from tf_memorization import report as report_lib  # pylint: disable=g-import-not-at-top
      inside = os.path.relpath(report_dir, final)
      if '://' not in final and not inside.startswith(os.pardir):
        # Inside the estimates folder: swapped in with it.
        report_lib.build(workdir, os.path.join(stage, inside),
                         estimates_dir=stage, parse_config=False, log=log)
      else:
        report_flag = 'Estimator.report_dir' if estimator.report_dir else flag
        with cli.staged_output(
            report_dir, report_flag,
            report_lib.INDEX_HTML if estimator.report_dir else None
        ) as report_stage:
          report_lib.build(workdir, report_stage, estimates_dir=stage,
                           parse_config=False, log=log)
  if estimator.report:
    log(f'Report: {os.path.join(report_dir, "index.html")}')
  return summary


def _estimate(workdir, output_dir, shown_dir, estimator, log):
  """The scores and experiments of `workdir`, written to `output_dir`.

  Args:
    workdir: the train binary's workdir.
    output_dir: where the files go (a staging folder).
    shown_dir: the folder they end up in, for the messages.
    estimator: an Estimator.
    log: callable taking one line.
  """
  timings = {}
  start = time.perf_counter()
  loaded = records_lib.load(workdir, margins=False,
                            diverged=estimator.diverged_trials)
  timings['load_seconds'] = time.perf_counter() - start
  k, n = loaded.masks.shape
  n_test = loaded.test_correct.shape[1]
  log(f'Loaded {k} trials of {loaded.dataset_info["name"]} ({n} train, '
      f'{n_test} test) in {timings["load_seconds"]:.1f}s.')
  if loaded.diverged:
    log(f'WARNING: left out {len(loaded.diverged)} diverged trials '
        f'{sorted(loaded.diverged)[:10]} (Estimator.diverged_trials = '
        "'skip').")

  start = time.perf_counter()
  mem = scores.memorization(loaded.masks, loaded.train_correct,
                            loaded.train_prob)
  _check_estimable(workdir, loaded, mem)
  timings['memorization_seconds'] = time.perf_counter() - start

  start = time.perf_counter()
  last_report = [start]

  def progress(done, total):
    now = time.perf_counter()
    if now - last_report[0] > 10 or done == total:
      rate = done / max(now - start, 1e-9)
      log(f'  influence: {done}/{total} training examples, ETA '
          f'{(total - done) / max(rate, 1e-9):.0f}s')
      last_report[0] = now

  dense_path = (os.path.join(output_dir, DENSE_NPY)
                if estimator.dense_influence else None)
  # The dense matrix is written in place (a memmap): to a temporary name,
  # renamed when whole, so a failure (e.g. a full disk) leaves no partial file.
  dense_tmp = dense_path and f'{dense_path}.tmp-{uuid.uuid4().hex}'
  try:
    infl = estimator.influence_of(loaded, mem.memorization,
                                  dense_path=dense_tmp, progress=progress)
    if dense_tmp:
      os.replace(dense_tmp, dense_path)
  except BaseException as e:
    if dense_tmp and os.path.exists(dense_tmp):
      os.remove(dense_tmp)
    full = (records_lib.no_space_error(dense_path, e)
            if dense_tmp and isinstance(e, Exception) else None)
    if full is not None:
      raise full from e
    raise
  timings['influence_seconds'] = time.perf_counter() - start

  split = None
  if estimator.split_half and k >= 4:
    start = time.perf_counter()
    split = estimator.split_half_agreement(loaded)
    timings['split_half_seconds'] = time.perf_counter() - start

  labels, ids = loaded.train_labels, loaded.train_ids
  _replace(os.path.join(output_dir, MEMORIZATION_CSV), _csv_bytes(
      ['index', 'id', 'label', 'memorization', 'memorization_stderr',
       'memorization_soft', 'k_in', 'k_out', 'consistency'],
      [np.arange(n), ids, labels, mem.memorization, mem.stderr, mem.soft,
       mem.k_in, mem.k_out, mem.consistency]))
  order = np.lexsort((infl.pair_test, -infl.pair_influence))
  pt, pj = infl.pair_train[order], infl.pair_test[order]
  _replace(os.path.join(output_dir, PAIRS_CSV), _csv_bytes(
      ['train_index', 'test_index', 'train_id', 'test_id', 'label',
       'influence', 'influence_stderr', 'memorization'],
      [pt, pj, ids[pt], loaded.test_ids[pj], labels[pt],
       infl.pair_influence[order], infl.pair_stderr[order],
       mem.memorization[pt]]))
  _replace(os.path.join(output_dir, TOPK_NPZ), records_lib.npz_bytes({
      'train_indices': infl.topk_indices, 'influence': infl.topk_influence,
      'test_ids': loaded.test_ids, 'train_ids': ids}))

  ratios = sorted({m.get('subset_ratio') for m in loaded.metadata
                   if m.get('subset_ratio') is not None})
  defined = ~np.isnan(mem.memorization)
  summary = {
      'workdir': workdir,
      'dataset': loaded.dataset_info,
      'fingerprint': loaded.fingerprint,
      'num_trials': k, 'num_train': n, 'num_test': n_test,
      'subset_ratios': ratios,
      'design': loaded.metadata[0].get('design'),
      'mean_train_accuracy': _mean_metric(loaded, 'train_accuracy'),
      'mean_heldout_accuracy': _mean_metric(loaded, 'heldout_accuracy'),
      'mean_test_accuracy': _mean_metric(loaded, 'test_accuracy'),
      'memorization_counts': {
          str(t): int((mem.memorization[defined] >= t).sum())
          for t in estimator.memorization_thresholds},
      'mean_memorization': float(np.nanmean(mem.memorization)),
      'median_memorization_stderr': float(np.nanmedian(mem.stderr)),
      'max_memorization_stderr': float(np.nanmax(mem.stderr)),
      'max_stderr_of_memorized': _max_or_none(
          mem.stderr[defined & (mem.memorization
                                >= estimator.memorization_threshold)]),
      'lemma_2_1_bound': (scores.lemma_2_1_bound(k, ratios[0])
                          if len(ratios) == 1 else None),
      'undefined_memorization': mem.num_undefined,
      'num_pairs': int(len(infl.pair_train)),
      'pair_thresholds': {'influence': estimator.influence_threshold,
                          'memorization': estimator.memorization_threshold,
                          'same_label': estimator.same_label},
      'median_pair_stderr': (float(np.median(infl.pair_stderr))
                             if len(infl.pair_stderr) else None),
      'influence_scores': estimator.influence_scores,
      'topk': estimator.topk,
      'split_half': split,
      'diverged_trials': {
          'policy': estimator.diverged_trials,
          'skipped': len(loaded.diverged),
          'trials': {str(t): r for t, r in sorted(loaded.diverged.items())}},
      'timings': timings,
      'operative_config': gin.operative_config_str(),
  }
  flipped = loaded.train_labels != loaded.original_train_labels
  if flipped.any():
    report = experiments_lib.label_noise_report(mem.memorization, flipped)
    experiments_lib.write_label_noise(output_dir, report, log)
    summary['label_noise'] = {k: v for k, v in report.items()
                              if not k.startswith('roc_')}
  summary['memorization_vs_influence'] = (
      experiments_lib.memorization_vs_influence(
          output_dir, mem.memorization, infl.max_influence, log))
  if estimator.experiments:
    summary['experiments'] = _run_experiments(
        workdir, output_dir, estimator, loaded, mem, infl, log)
  _replace(os.path.join(output_dir, SUMMARY_JSON),
           json.dumps(records_lib.json_safe(summary), indent=2,
                      sort_keys=True, allow_nan=False).encode())
  log(format_summary(summary, shown_dir))
  return summary


def _run_experiments(workdir, output_dir, estimator, loaded, mem, infl, log):
  """Runs the retraining experiments the config asks for."""
  from tf_memorization import runs  # pylint: disable=g-import-not-at-top
  setup = runs.build(workdir, write=False)
  if setup.fingerprint != loaded.fingerprint:
    raise cli.UserError(
        f'The config given to the estimator (fingerprint {setup.fingerprint}) '
        f'differs from the one the trials in {workdir} ran with '
        f'({loaded.fingerprint}); experiments must retrain the same models. '
        f'Drop the training bindings you passed, or compare with '
        f'{os.path.join(workdir, records_lib.CONFIG_FILE)}.')
  results = {}
  for kind in estimator.experiments:
    start = time.perf_counter()
    experiment = experiments_lib.BY_KIND[kind]()
    if kind == 'removal':
      results[kind] = experiment.run(workdir, output_dir, setup, mem, infl,
                                     log)
    elif kind == 'ablation':
      results[kind] = experiment.run(workdir, output_dir, setup, loaded, mem,
                                     infl, estimator, log)
    elif kind == 'leave_one_out':
      results[kind] = experiment.run(workdir, output_dir, setup, mem, log)
    elif kind == 'ratio_sweep':
      results[kind] = experiment.run(workdir, output_dir, setup, loaded, mem,
                                     log)
    results[kind]['seconds'] = time.perf_counter() - start
  return results


def format_summary(summary, output_dir):
  """The table printed at the end of a run."""
  rows = [
      ('trials (k)', summary['num_trials']),
      ('train / test examples', f'{summary["num_train"]} / {summary["num_test"]}'),
      ('subset ratio(s)', ', '.join(f'{r:g}' for r in summary['subset_ratios'])),
      ('mean accuracy train / held-out / test',
       f'{summary["mean_train_accuracy"]:.4f} / '
       f'{summary["mean_heldout_accuracy"]:.4f} / '
       f'{summary["mean_test_accuracy"]:.4f}'),
  ]
  for t, count in summary['memorization_counts'].items():
    rows.append((f'examples with memorization >= {t}', count))
  rows += [
      ('examples with no estimate (never in or out)',
       summary['undefined_memorization']),
      ('median / max memorization stderr',
       f'{summary["median_memorization_stderr"]:.4f} / '
       f'{summary["max_memorization_stderr"]:.4f}'),
      ('max stderr where memorization >= threshold',
       'n/a' if summary['max_stderr_of_memorized'] is None
       else f'{summary["max_stderr_of_memorized"]:.4f}'),
      ('Lemma 2.1 bound on E[(est - true)^2]',
       'n/a (several ratios)' if summary['lemma_2_1_bound'] is None
       else f'{summary["lemma_2_1_bound"]:.4f}'),
      ('high-influence pairs', summary['num_pairs']),
  ]
  skipped = (summary.get('diverged_trials') or {}).get('skipped')
  if skipped:
    rows.append(('diverged trials left out', skipped))
  split = summary['split_half']
  if split:
    rows += [('split-half memorization Pearson / Spearman',
              f'{split["memorization_pearson"]:.3f} / '
              f'{split["memorization_spearman"]:.3f}'),
             ('split-half pair Jaccard', f'{split["pairs_jaccard"]:.3f}')]
  width = max(len(r[0]) for r in rows)
  lines = [f'Estimates written to {output_dir}']
  lines += [f'  {name.ljust(width)}  {value}' for name, value in rows]
  return '\n'.join(lines)


def _main():
  f = flags.FLAGS
  run(f.workdir, f.gin_file, f.gin_bindings, f.output_dir, f.data_dir,
      log=lambda line: print(line, flush=True))


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)
