"""The `Estimator` configurable: which scores to compute and how.

Its own module, with no TensorFlow and no training behind it, so that the
train and inspect binaries read the planner's targets (`target_stderr`,
`target_pair_jaccard`) without importing the estimate's pipeline; the
pipeline (pipeline.py) builds it and checks its experiment kinds against
those registered.
"""

import gin
import numpy as np

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.stats import blocks
from tf_memorization.stats import scores

config.not_fingerprinted('Estimator.')


@gin.configurable
class Estimator:
  """Which scores to compute and how (a gin configurable).

  Args:
    topk: training examples kept per test example.
    influence_threshold: pairs need influence >= this (paper: 0.15).
    memorization_threshold: pairs need the training example's memorization
      >= this (paper: 0.25).
    same_label: pairs need the same label (paper: yes).
    influence_scope: which influences are computed (stats/blocks.py):
      'same_label' (the default) only those of a training example on the
      test examples of its label, the pairs the paper reads, at 1/C of the
      cost over C classes: the top-k per test example are then among the
      training examples of its label, and each training example's largest
      influence is over the test examples of its label; 'all' every
      (training, test) pair (needed for same_label = False and for
      dense_influence).
    memorization_thresholds: the summary counts examples over each.
    block_size: training examples per influence matrix product.
    dense_influence: also write the dense float16 influence matrix (n x
      n_test; needs influence_scope = 'all').
    split_half: estimate from the even and the odd trials and report
      their agreement (from the same product as the estimates: views.py).
    influence_scores: 'correct' (0/1, the paper) or 'prob' (soft).
    experiments: which retraining experiments to run after the scores:
      any of experiments.BY_KIND ('ablation', 'removal', 'leave_one_out',
      'ratio_sweep'; configured by AblationExperiment, RemovalExperiment,
      LeaveOneOutExperiment, SubsetRatioSweep), checked by
      pipeline.configure against the kinds registered.
    report: write the HTML report (reporting/page.py) at the end of the run.
    report_dir: its folder (None: W/report, or OUTPUT_DIR/report when the
      estimates go to another --output_dir). Only the caller's gin files
      and bindings may set it: a workdir's config never chooses a path.
    diverged_trials: trials whose model diverged (flagged in their records
      by the train binary): 'refuse' (one error naming them) or 'skip'
      (estimate without them; summary.json counts them).
    pair_fdr: the false discovery rate of the controlled pair set
      (assessment.py, selection.py).
    memorization_fdr: that of the controlled memorized set.
    fdr_method: 'bh' (Benjamini-Hochberg: independent or positively
      dependent tests) or 'by' (Benjamini-Yekutieli: any dependence).
    pair_procedure: 'filtered' (the false-discovery control over the pairs
      of the family whose test can reach the level given its margins: the
      pairs of test examples the trials always or nearly always get right
      or wrong are left out; stats/procedures.py) or 'whole' (over the whole
      family, as before). Pairs on soft values (Welch's test) are always
      controlled over the whole family.
    pair_null: each pair's null, H0: influence <= pair_null (None: the
      influence threshold, so that a selected pair's influence exceeds it;
      0: any positive influence).
    memorization_null: the same for memorization (None: the memorization
      threshold).
    null_permutations: planted nulls (test predictions reassigned among the
      trials) whose pairs estimate the false discoveries of the raw set;
      each costs one more matrix product (0: none), or `null_sample` of
      one.
    null_sample: the share of the family each null covers, by blocks of
      block_size training examples among those holding pairs of the
      family, its count scaled to all (1: every example; a family in one
      block is covered whole).
    convergence: also estimate on every 8th, 4th and 2nd trial (no extra
      product) and compare with all.
    planner: predict standard errors, controlled sets and training hours
      for larger k (planner.py).
    target_stderr: the planner's target for the memorization standard
      errors (at its quantile 0.9).
    target_pair_jaccard: its target for the split-run Jaccard of the
      controlled pair set.
  """

  def __init__(self, topk=10, influence_threshold=0.15,
               memorization_threshold=0.25, same_label=True,
               influence_scope='same_label', memorization_thresholds=(0.1, 0.25, 0.5, 0.75),
               block_size=2048, dense_influence=False, split_half=True,
               influence_scores='correct', experiments=(), report=True,
               report_dir=None, diverged_trials='refuse', pair_fdr=0.1,
               memorization_fdr=0.1, fdr_method='bh', pair_procedure='filtered',
               pair_null=None,
               memorization_null=None, null_permutations=1, null_sample=0.5,
               convergence=True, planner=True, target_stderr=0.05,
               target_pair_jaccard=0.7):
    name = 'Estimator.'
    errors.choice(name + 'influence_scores', influence_scores,
                  ('correct', 'prob'))
    self.topk = errors.integer(name + 'topk', topk, minimum=0)
    self.influence_threshold = errors.number(name + 'influence_threshold',
                                             influence_threshold)
    self.memorization_threshold = errors.number(
        name + 'memorization_threshold', memorization_threshold)
    self.same_label = errors.boolean(name + 'same_label', same_label)
    self.influence_scope = errors.choice(name + 'influence_scope',
                                         influence_scope, blocks.SCOPES)
    self.memorization_thresholds = errors.sequence(
        name + 'memorization_thresholds', memorization_thresholds,
        errors.number)
    self.block_size = errors.integer(name + 'block_size', block_size,
                                     minimum=1)
    self.dense_influence = errors.boolean(name + 'dense_influence',
                                          dense_influence)
    if influence_scope != 'all':
      for binding, asked, what in (
          ('same_label = False', not self.same_label,
           'pairs of different labels'),
          ('dense_influence = True', self.dense_influence,
           'the dense n x n_test matrix')):
        if asked:
          raise ValueError(
              f'{name}{binding} asks for {what}, which {name}influence_scope '
              f"= {influence_scope!r} does not compute: bind {name}"
              "influence_scope = 'all' as well.")
    self.split_half = errors.boolean(name + 'split_half', split_half)
    self.influence_scores = influence_scores
    self.experiments = tuple(errors.sequence(name + 'experiments', experiments,
                                             errors.string))
    self.report = errors.boolean(name + 'report', report)
    self.report_dir = errors.string(name + 'report_dir', report_dir,
                                    allow_none=True)
    self.diverged_trials = errors.choice(name + 'diverged_trials',
                                         diverged_trials, ('refuse', 'skip'))
    for key, value in (('pair_fdr', pair_fdr),
                       ('memorization_fdr', memorization_fdr)):
      value = errors.number(name + key, value)
      if not 0 < value <= 0.5:
        raise ValueError(f'{name}{key} = {value}: choose a false discovery '
                         'rate in (0, 0.5], e.g. 0.1.')
      setattr(self, key, value)
    self.fdr_method = errors.choice(name + 'fdr_method', fdr_method,
                                    ('bh', 'by'))
    self.pair_procedure = errors.choice(name + 'pair_procedure',
                                        pair_procedure, ('filtered', 'whole'))
    for key, value in (('pair_null', pair_null),
                       ('memorization_null', memorization_null)):
      if value is not None:
        value = errors.number(name + key, value)
        if not -1 < value < 1:
          raise ValueError(f'{name}{key} = {value}: a null difference lies '
                           'in (-1, 1); None means the threshold.')
      setattr(self, key, value)
    self.null_permutations = errors.integer(name + 'null_permutations',
                                            null_permutations, minimum=0)
    self.null_sample = errors.number(name + 'null_sample', null_sample)
    if not 0 < self.null_sample <= 1:
      raise ValueError(f'{name}null_sample = {null_sample}: a share in '
                       '(0, 1].')
    self.convergence = errors.boolean(name + 'convergence', convergence)
    self.planner = errors.boolean(name + 'planner', planner)
    self.target_stderr = errors.number(name + 'target_stderr', target_stderr)
    if not self.target_stderr > 0:
      raise ValueError(f'{name}target_stderr = {target_stderr}: must be > 0.')
    self.target_pair_jaccard = errors.number(name + 'target_pair_jaccard',
                                             target_pair_jaccard)
    if not 0 < self.target_pair_jaccard <= 1:
      raise ValueError(f'{name}target_pair_jaccard = {target_pair_jaccard}: '
                       'choose a Jaccard index in (0, 1].')

  def test_values(self, loaded, rows=slice(None)):
    """The test-side values influence is computed on (of `rows`)."""
    if self.influence_scores == 'prob':
      return loaded.test_prob[rows].astype(np.float32)
    return loaded.test_correct[rows]

  def influence_of(self, loaded, mem_values, rows=slice(None), topk=None,
                   dense_path=None, progress=None):
    """scores.influence of `loaded` (rows: a subset of its trials) with
    this estimator's settings."""
    return scores.influence(
        loaded.masks[rows], self.test_values(loaded, rows),
        loaded.train_labels, loaded.test_labels, mem_values,
        topk=self.topk if topk is None else topk,
        influence_threshold=self.influence_threshold,
        memorization_threshold=self.memorization_threshold,
        same_label=self.same_label, block_size=self.block_size,
        dense_path=dense_path, progress=progress, scope=self.influence_scope)
