"""The estimator: every score from the trial records of a workdir.

    run(workdir, gin_files, gin_bindings)   what the estimate binary does

1. **Config, checked before any heavy work.** The workdir's own config
   (W/operative_config.gin, bindings only) and the caller's gin files and
   bindings are parsed; the `Estimator` and every experiment it lists are
   built (a bad binding is one error now); with experiments, the trials'
   training setup is rebuilt and must have the trials' fingerprint.
2. **Records** (loading.load: every record checked).
3. **Scores** (scores.py): memorization with standard errors, in/out counts,
   the soft variant and the consistency score; the influence of every
   training example on every test example, blocked (top-k per test example
   and the pairs over the paper's thresholds, with standard errors); the
   split-half agreement.
4. **Outputs** (estimates.py names and writes them): memorization.csv,
   influence_pairs.csv, influence_topk.npz, the analyses that need no
   retraining (analyses.py: label noise, memorization vs influence), the
   experiments (experiments/: ablation, removal, leave-one-out, ratio
   sweep), summary.json, and the HTML report (reporting/page.py), which
   gets the estimates in memory.

Everything goes to a staging folder beside W/estimates that is swapped in
whole when the run succeeds (storage.staged_output): a failed or killed
estimate leaves the earlier estimates (and report) as they were.
"""

import copy
import dataclasses
import functools
import json
import os
import time
import uuid
import warnings

import gin
import numpy as np
import tensorflow as tf

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import progress as progress_lib
from tf_memorization.core import storage
from tf_memorization.estimation import analyses
from tf_memorization.estimation import per_example
from tf_memorization.estimation import settings
from tf_memorization import experiments as experiments_lib
from tf_memorization.stats import assessment
from tf_memorization.stats import planner as planner_lib
from tf_memorization.stats import scores
from tf_memorization.training import runs
from tf_memorization.training import trainer
from tf_memorization.workdir import estimates
from tf_memorization.workdir import imported
from tf_memorization.workdir import loading

def _check_kinds(kinds):
  """Refuses an experiment kind no module registered."""
  known = tuple(experiments_lib.BY_KIND)  # with any registered since
  unknown = set(kinds) - set(known)
  if unknown:
    raise ValueError(f'Estimator.experiments: unknown {sorted(unknown)}; '
                     f'choose from {known}.')


def configure(workdir, gin_files=(), gin_bindings=(), data_dir=None):
  """Parses the config of an estimate of `workdir` and checks all of it.

  The trials' own config comes first, so that experiments retrain exactly
  the models the trials trained; the user's files and bindings follow.
  Locations (data_dir, report_dir) come only from the caller: the
  workdir's config may not bind them (config.check_bindings_only).

  Returns:
    (Estimator, [experiment objects]).
  """
  trial_config = os.path.join(workdir, files.CONFIG_FILE)
  config_files = [trial_config] if tf.io.gfile.exists(trial_config) else []
  bindings = list(gin_bindings)
  if data_dir:
    bindings.append(f'load_dataset.data_dir = {data_dir!r}')
  config.parse_gin(config_files + list(gin_files), bindings)
  try:
    estimator = settings.Estimator()
    _check_kinds(estimator.experiments)
    estimator.per_example = per_example.PerExampleScores()
  except (ValueError, TypeError) as e:
    raise errors.UserError(
        f'Bad Estimator config: {e}'.replace('\n', ' ')) from e
  built = []
  for kind in estimator.experiments:  # a bad binding fails now, not later
    experiment = experiments_lib.BY_KIND[kind]
    try:
      built.append(experiment())
    except (ValueError, TypeError) as e:
      if isinstance(e, errors.USER_ERRORS):
        raise
      raise errors.UserError(f'Bad {experiment.__name__} config: '
                             f'{e}'.replace('\n', ' ')) from e
  return estimator, built


def run(workdir, gin_files=(), gin_bindings=(), output_dir=None, data_dir=None,
        log=print):
  """Computes every score for `workdir` and writes the outputs.

  Everything is written to a temporary folder beside the estimates folder
  and swapped in once the whole run succeeded (storage.staged_output), so
  a failed or killed estimate leaves the earlier estimates (and report) as
  they were, never a mix of two runs.

  Returns:
    The summary (summary.json's object).
  """
  if not workdir:
    raise errors.UserError('--workdir is required: the train binary\'s '
                           'workdir.')
  estimator, experiments = configure(workdir, gin_files, gin_bindings,
                                     data_dir)
  report_dir = estimator.report_dir or os.path.join(output_dir or workdir,
                                                    'report')
  flag = '--output_dir' if output_dir else '--workdir'
  final = output_dir or estimates.estimates_dir(workdir)
  # A folder given by flag may be anyone's: replaced only if it is ours.
  with storage.staged_output(
      final, flag, estimates.SUMMARY_JSON if output_dir else None) as stage:
    written = _estimate(workdir, stage, final, estimator, experiments, log)
    if estimator.report:
      _report(workdir, stage, final, report_dir, flag, estimator, written,
              log)
  if estimator.report:
    log(f'Report: {os.path.join(report_dir, "index.html")}')
  return written.summary


def _report(workdir, stage, final, report_dir, flag, estimator, written,
            log):
  """The HTML report of the estimates `written` (handed in memory)."""
  from tf_memorization.reporting import page as report_lib  # pylint: disable=g-import-not-at-top
  build = functools.partial(report_lib.build, workdir, estimates_dir=stage,
                            parse_config=False, log=log, estimates=written,
                            shown_estimates_dir=final)
  inside = os.path.relpath(report_dir, final)
  if '://' not in final and not inside.startswith(os.pardir):
    build(os.path.join(stage, inside))  # swapped in with the estimates
    return
  report_flag = 'Estimator.report_dir' if estimator.report_dir else flag
  with storage.staged_output(
      report_dir, report_flag,
      report_lib.INDEX_HTML if estimator.report_dir else None) as stage_dir:
    build(stage_dir)


def check_estimable(workdir, loaded, mem):
  """Refuses trials that leave no example both in and out of some trial."""
  k = loaded.num_trials
  designed = max([m.get('num_trials') or 0 for m in loaded.metadata] + [2])
  train = (f'python -m tf_memorization.train --workdir={workdir} with the '
           'same flags')
  if k < 2:
    raise errors.UserError(
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
    raise errors.UserError(
        f'No training example is {where} any of the {k} trials in {workdir}, '
        'so nothing can be estimated: each example needs at least 1 trial '
        f'that includes it and 1 that holds it out. {more}.')


def check_fingerprint(workdir, setup, loaded):
  """Refuses a training setup other than the one the trials ran with
  (experiments must retrain the same models)."""
  if setup.fingerprint != loaded.fingerprint:
    raise errors.UserError(
        f'The config given to the estimator (fingerprint {setup.fingerprint}) '
        f'differs from the one the trials in {workdir} ran with '
        f'({loaded.fingerprint}); experiments must retrain the same models. '
        f'Drop the training bindings you passed, or compare with '
        f'{os.path.join(workdir, files.CONFIG_FILE)}.')


def _influence(estimator, loaded, mem, output_dir, log):
  """The influence pass over every view (assessment.assess, with progress
  lines); the dense matrix is written in place (a memmap) under a
  temporary name, renamed when whole."""
  total = loaded.masks.shape[1]
  # The rate is measured from the end of the first block (the views' set-up
  # before it would make the first ETA hours long at ImageNet's size).
  state = {}

  def report(done, _):
    if not state:
      state.update(first=done, progress=progress_lib.Progress(
          total - done, every_seconds=10))
      return
    progress = state['progress']
    if progress.due(done - state['first']):
      log(f'  influence: {done}/{total} training examples, ETA '
          f'{progress.eta(done - state["first"])}')

  dense_path = (os.path.join(output_dir, estimates.DENSE_NPY)
                if estimator.dense_influence else None)
  dense_tmp = dense_path and f'{dense_path}.tmp-{uuid.uuid4().hex}'
  try:
    result = assessment.assess(
        loaded, estimator, mem, estimator.test_values(loaded),
        dense_path=dense_tmp, progress=report,
        seed=loaded.metadata[0].get('seed') or 0)
    if dense_tmp:
      os.replace(dense_tmp, dense_path)
  except BaseException as e:
    if dense_tmp and os.path.exists(dense_tmp):
      os.remove(dense_tmp)
    full = (storage.no_space_error(dense_path, e)
            if dense_tmp and isinstance(e, Exception) else None)
    if full is not None:
      raise full from e
    raise
  return result


def _estimate(workdir, output_dir, shown_dir, estimator, experiments, log):
  """The scores and experiments of `workdir`, written to `output_dir`.

  Args:
    workdir: the train binary's workdir.
    output_dir: where the files go (a staging folder).
    shown_dir: the folder they end up in, for the messages.
    estimator: an Estimator.
    experiments: the experiment objects to run.
    log: callable taking one line.

  Returns:
    The estimates.Estimates written.
  """
  timings = {}
  stages = progress_lib.Stages(timings)
  settings = estimator.per_example
  required, optional = settings.load_fields()
  # Compact: masks and correctness bit-packed, the other training-side
  # fields on a temporary spill read a block of examples at a time, so
  # memory does not grow with k (loading.load's `compact`).
  with stages('load'):
    loaded = loading.load(
        workdir, margins=settings.margins, diverged=estimator.diverged_trials,
        fields=required, if_present=optional,
        missing_fix=per_example.missing_fix, compact=True)
  try:
    return _estimate_loaded(workdir, output_dir, shown_dir, estimator,
                            experiments, log, loaded, stages)
  finally:
    loaded.close()


def _estimate_loaded(workdir, output_dir, shown_dir, estimator, experiments,
                     log, loaded, stages):
  """_estimate's work once the records are loaded (each stage's seconds
  and the peak memory after it go to summary.json's timings)."""
  timings = stages.timings
  k, n = loaded.masks.shape
  log(f'Loaded {k} trials of {loaded.dataset_info["name"]} ({n} train, '
      f'{loaded.test_correct.shape[1]} test) in '
      f'{timings["load_seconds"]:.1f}s.')
  if loaded.diverged:
    log(f'WARNING: left out {len(loaded.diverged)} diverged trials '
        f'{sorted(loaded.diverged)[:10]} (Estimator.diverged_trials = '
        "'skip').")
  # The estimator's own config (Estimator, the experiments' bindings),
  # before the training setup adds the trials'.
  operative_config = gin.operative_config_str()
  setup = None
  skipped = {}
  for experiment in experiments:  # they retrain with our trainer
    reason = imported.skipped(
        loaded, experiment.kind, "it retrains models with this package's "
        'trainer, which has no config for them')
    if reason:
      log(reason)
      skipped[experiment.kind] = {'skipped': reason}
  if skipped:
    experiments = []
  if experiments:  # built (and so checked) before any score is computed
    setup = runs.build(workdir, write=False)
    check_fingerprint(workdir, setup, loaded)

  no_train = 'train' not in loaded.predicted
  pair_settings = estimator
  if no_train:
    log(f'Memorization: skipped, the records of {workdir} hold no '
        'predictions on the training examples (imported without them, e.g. '
        "datamodels' test margins alone): influence and pairs only, the "
        'pair family every training example with the test examples of its '
        'label (no memorization filter).')
    pair_settings = copy.copy(estimator)
    pair_settings.memorization_threshold = -np.inf  # every example's pairs
    if estimator.memorization_null is None:  # its tests: on placeholders
      pair_settings.memorization_null = estimator.memorization_threshold
  with stages('memorization'):
    mem = scores.memorization(loaded.masks, loaded.train_correct,
                              loaded.train_prob)
    check_estimable(workdir, loaded, mem)
  if not loaded.test_correct.shape[1]:
    log(f'Influence: skipped, {workdir} has no test examples (its trials '
        'were imported without test predictions): memorization, C-scores '
        'and membership only.')
  with stages('influence'):
    trust = _influence(pair_settings, loaded, mem, output_dir, log)
  infl = trust.influence
  split = trust.summary.pop('split_half')
  if no_train:  # nothing of the training examples' own was measured
    mem = _unmeasured(mem)
    _drop_memorization(trust, split)
  plan = None
  if estimator.planner and no_train:
    log('Planner: skipped, it models memorization and pairs together, and '
        'the records hold no train predictions.')
  elif estimator.planner:
    with stages('planner'):
      plan = planner_lib.Plan(loaded, mem.memorization, estimator).summary(
          estimator.target_stderr, estimator.target_pair_jaccard,
          measured=trust.summary, split=split)

  with stages('write_scores'):
    tables = _write_scores(output_dir, loaded, mem, trust)
  summary = _summary(workdir, estimator, loaded, mem, infl, split, timings,
                     operative_config)
  summary['trust'] = trust.summary
  summary['planner'] = plan
  with stages('analyses'):
    if trust.convergence:
      analyses.write_convergence(output_dir, trust.convergence, log)
    flipped = loaded.train_labels != loaded.original_train_labels
    if flipped.any():
      noise = analyses.label_noise_report(mem.memorization, flipped)
      analyses.write_label_noise(output_dir, noise, log)
      summary['label_noise'] = {key: v for key, v in noise.items()
                                if not key.startswith('roc_')}
    if loaded.test_correct.shape[1] and not no_train:
      summary['memorization_vs_influence'] = (
          analyses.memorization_vs_influence(
              output_dir, mem.memorization, infl.max_influence, log,
              estimator.influence_scope))
  summary.update(per_example.compute(estimator.per_example, workdir, loaded,
                                     mem, output_dir, log,
                                     estimator.diverged_trials, stages))
  if skipped:
    summary['experiments'] = skipped
  if experiments:
    inputs = experiments_lib.Inputs(
        workdir=workdir, output_dir=output_dir, setup=setup,
        records=loaded.dense(),
        memorization=mem, influence=infl,
        influence_of=estimator.influence_of,
        new_trainer=functools.partial(trainer.TrialTrainer, setup.dataset,
                                      setup.strategy),
        log=log)
    summary['experiments'] = {}
    for experiment in experiments:
      start = time.perf_counter()
      result = experiment.run(inputs)
      result['seconds'] = time.perf_counter() - start
      summary['experiments'][experiment.kind] = result
  text = estimates.json_text(summary)
  storage.atomic_replace(os.path.join(output_dir, estimates.SUMMARY_JSON),
                         text.encode())
  log(estimates.format_summary(summary, shown_dir))
  return estimates.Estimates(summary=json.loads(text), **tables)


def _unmeasured(mem):
  """The memorization of records without train predictions: every score
  NaN (nothing was measured), the in/out counts kept (the masks are)."""
  nan = np.full(len(mem.k_in), np.nan)
  return dataclasses.replace(mem, memorization=nan, stderr=nan, soft=nan,
                             soft_stderr=nan, consistency=nan)


def _drop_memorization(trust, split):
  """The trust figures of memorization set to None (records without
  train predictions: the assessment ran on placeholders)."""
  trust.summary['memorized'] = None
  for key in ('raw_memorized', 'memorized_fdp'):
    if key in trust.summary.get('null', {}):
      trust.summary['null'][key] = None
  for rows in (trust.convergence or [], [split]):
    for row in rows:
      for key in list(row):
        if key.startswith('memoriz'):
          row[key] = None
  tests = trust.memorization_tests
  for key in ('pvalue', 'qvalue'):
    tests[key] = np.full(len(tests[key]), np.nan)
  tests['selected'] = np.zeros(len(tests['selected']), bool)


def _write_scores(output_dir, loaded, mem, trust):
  """memorization.csv, influence_pairs.csv and influence_topk.npz; what a
  reader of them gets back (estimates.Estimates' fields but the summary).

  The pairs file holds the raw pairs (the paper's thresholds) and the
  controlled ones (estimates.PAIRS_HEADER), the best first."""
  infl, pairs, tests = trust.influence, trust.pairs, trust.memorization_tests
  n = loaded.masks.shape[1]
  labels, ids = loaded.train_labels, loaded.train_ids
  cells = estimates.cells  # each column formatted once, written and kept
  mem_cells = {name: cells(getattr(mem, name))
               for name in ('memorization', 'stderr', 'consistency')}
  mem_cells['qvalue'] = cells(tests['qvalue'])
  controlled = tests['selected'].astype(np.int64)
  storage.atomic_replace(
      os.path.join(output_dir, estimates.MEMORIZATION_CSV),
      estimates.cells_bytes(estimates.MEMORIZATION_HEADER, [
          cells(np.arange(n)), cells(ids), cells(labels),
          mem_cells['memorization'], mem_cells['stderr'], cells(mem.soft),
          cells(mem.k_in), cells(mem.k_out), mem_cells['consistency'],
          cells(tests['pvalue']), mem_cells['qvalue'], cells(controlled)]))
  table = assessment.pair_table(loaded, pairs)
  pt, pj = table['train'], table['test']
  pair_cells = {name: cells(table[name])
                for name in ('influence', 'stderr', 'qvalue')}
  storage.atomic_replace(
      os.path.join(output_dir, estimates.PAIRS_CSV),
      estimates.cells_bytes(estimates.PAIRS_HEADER, [
          cells(pt), cells(pj), cells(ids[pt]), cells(loaded.test_ids[pj]),
          cells(labels[pt]), pair_cells['influence'], pair_cells['stderr'],
          cells(mem.memorization[pt]), cells(table['pvalue']),
          pair_cells['qvalue'], cells(table['raw']),
          cells(table['controlled'])]))
  storage.atomic_replace(
      os.path.join(output_dir, estimates.TOPK_NPZ), storage.npz_bytes({
          'train_indices': infl.topk_indices, 'influence': infl.topk_influence,
          'test_ids': loaded.test_ids, 'train_ids': ids}))
  return dict(
      memorization=estimates.as_written(mem_cells['memorization']),
      stderr=estimates.as_written(mem_cells['stderr']),
      consistency=estimates.as_written(mem_cells['consistency']),
      qvalue=estimates.as_written(mem_cells['qvalue']),
      controlled=controlled.astype(bool),
      k_in=np.asarray(mem.k_in, np.int64), k_out=np.asarray(mem.k_out,
                                                            np.int64),
      pairs={'train': np.asarray(pt, np.int64),
             'test': np.asarray(pj, np.int64),
             'influence': estimates.as_written(pair_cells['influence']),
             'stderr': estimates.as_written(pair_cells['stderr']),
             'qvalue': estimates.as_written(pair_cells['qvalue']),
             'raw': table['raw'].astype(bool),
             'controlled': table['controlled'].astype(bool)},
      topk_indices=np.asarray(infl.topk_indices, np.int64),
      topk_influence=np.asarray(infl.topk_influence, np.float64),
      train_labels=loaded.train_labels,
      original_train_labels=loaded.original_train_labels,
      test_labels=loaded.test_labels, train_ids=ids,
      test_ids=loaded.test_ids)


def _max_or_none(values):
  return float(np.max(values)) if len(values) else None


def _summary(workdir, estimator, loaded, mem, infl, split, timings,
             operative_config):
  """summary.json's object, before the analyses and experiments add theirs."""
  k, n = loaded.masks.shape
  ratios = sorted({m.get('subset_ratio') for m in loaded.metadata
                   if m.get('subset_ratio') is not None})
  defined = ~np.isnan(mem.memorization)
  accuracy = loading.mean_accuracies(loaded)
  measured = 'train' in loaded.predicted
  with warnings.catch_warnings():  # all NaN without train predictions
    warnings.simplefilter('ignore', RuntimeWarning)
    spread = {'mean_memorization': float(np.nanmean(mem.memorization)),
              'median_memorization_stderr': float(np.nanmedian(mem.stderr)),
              'max_memorization_stderr': float(np.nanmax(mem.stderr))}
  return {
      'workdir': workdir,
      'dataset': loaded.dataset_info,
      'fingerprint': loaded.fingerprint,
      'num_trials': k, 'num_train': n,
      'num_test': loaded.test_correct.shape[1],
      'subset_ratios': ratios,
      'design': loaded.metadata[0].get('design'),
      'mean_train_accuracy': accuracy['train'],
      'mean_heldout_accuracy': accuracy['heldout'],
      'mean_test_accuracy': accuracy['test'],
      'memorization_counts': {
          str(t): int((mem.memorization[defined] >= t).sum()) if measured
                  else None
          for t in estimator.memorization_thresholds},
      **spread,
      'max_stderr_of_memorized': _max_or_none(
          mem.stderr[defined & (mem.memorization
                                >= estimator.memorization_threshold)]),
      'lemma_2_1_bound': (scores.lemma_2_1_bound(k, ratios[0])
                          if len(ratios) == 1 else None),
      # Examples never in or never out of a trial (their estimate is NaN).
      'undefined_memorization': int(np.sum((mem.k_in == 0) |
                                           (mem.k_out == 0))),
      'num_pairs': int(len(infl.pair_train)),
      'pair_thresholds': {'influence': estimator.influence_threshold,
                          'memorization': (estimator.memorization_threshold
                                           if measured else None),
                          'same_label': estimator.same_label},
      'median_pair_stderr': (float(np.median(infl.pair_stderr))
                             if len(infl.pair_stderr) else None),
      'influence_scores': estimator.influence_scores,
      'influence_scope': estimator.influence_scope,
      'topk': estimator.topk,
      'split_half': split,
      'diverged_trials': {
          'policy': estimator.diverged_trials,
          'skipped': len(loaded.diverged),
          'trials': {str(t): r for t, r in sorted(loaded.diverged.items())}},
      'timings': timings,
      'operative_config': operative_config,
  }
