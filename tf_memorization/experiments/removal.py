"""Test-accuracy removal: the paper's marginal-utility experiment.

Removes the training examples with memorization over each threshold (and,
beside them, as many random ones), retrains `repeats` models a condition,
and measures test accuracy overall and on the test examples the
high-influence pairs name. Writes removal.csv / .json / .png.
"""

import os

import gin
import numpy as np

from tf_memorization.core import errors
from tf_memorization.experiments import base
from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import scores
from tf_memorization.training import runs
from tf_memorization.workdir import estimates


@base.register('removal')
@gin.configurable
class RemovalExperiment(base.Experiment):
  """Remove memorized (or high-influence) examples, retrain, measure accuracy.

  Args:
    thresholds: remove the training examples with memorization >= each.
    repeats: models trained per condition (r).
    influence_set: also remove the training examples of the high-influence
      pairs, and measure accuracy on the influenced test examples.
  """

  def __init__(self, thresholds=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5), repeats=3,
               influence_set=True):
    name = 'RemovalExperiment.'
    self.thresholds = errors.sequence(name + 'thresholds', thresholds,
                                      errors.number)
    self.repeats = errors.integer(name + 'repeats', repeats, minimum=1)
    self.influence_set = errors.boolean(name + 'influence_set', influence_set)

  def jobs(self, setup, memorization, pair_train):
    """The plan: full data, memorized vs random removal, influence set."""
    n = len(setup.dataset.train)
    rng = np.random.default_rng([setup.design.seed, 0x2E3])
    jobs = []

    def add(condition, removed, **extra):
      for repeat in range(self.repeats):
        mask = np.ones(n, bool)
        mask[removed] = False
        index = len(jobs)
        seed = base.seed_of(setup.design.seed, 'removal', index)
        jobs.append(runs.Job(index, mask, seed,
                             {'condition': condition, 'repeat': repeat,
                              'num_removed': int(len(removed)), **extra}))

    add('full', np.zeros(0, np.int64))
    defined = np.isfinite(memorization)
    for threshold in self.thresholds:
      removed = np.flatnonzero(defined & (memorization >= threshold))
      random_removed = np.sort(rng.choice(n, size=len(removed), replace=False))
      add('memorized', removed, threshold=threshold)
      add('random', random_removed, threshold=threshold)
    if self.influence_set:
      removed = np.unique(pair_train)
      add('influence_set', removed)
      add('influence_random',
          np.sort(rng.choice(n, size=len(removed), replace=False)))
    return jobs

  def run(self, inputs):
    output_dir, setup, log = inputs.output_dir, inputs.setup, inputs.log
    mem, infl = inputs.memorization, inputs.influence
    jobs = self.jobs(setup, mem.memorization, infl.pair_train)
    loaded = base.run_jobs(inputs.workdir, 'removal', setup, jobs, log)
    by_index = {int(t): row for row, t in enumerate(loaded.trial_indices)}
    influenced = np.unique(infl.pair_test)
    groups = {}
    for job in jobs:
      row = by_index[job.index]
      key = (job.metadata['condition'], job.metadata.get('threshold'))
      test = loaded.test_correct[row]
      groups.setdefault(key, {'num_removed': job.metadata['num_removed'],
                              'overall': [], 'influenced': []})
      groups[key]['overall'].append(test.mean())
      if len(influenced):
        groups[key]['influenced'].append(test[influenced].mean())
    header = ['condition', 'threshold', 'num_removed', 'test_accuracy_mean',
              'test_accuracy_std', 'influenced_accuracy_mean',
              'influenced_accuracy_std', 'models']
    rows, table = [], []
    for (condition, threshold), g in groups.items():
      overall, influenced_acc = scores.mean_std(g['overall']), scores.mean_std(
          g['influenced'])
      rows.append([condition, '' if threshold is None else threshold,
                   g['num_removed'], *overall, *influenced_acc,
                   len(g['overall'])])
      table.append({'condition': condition, 'threshold': threshold,
                    'num_removed': g['num_removed'],
                    'test_accuracy': overall,
                    'influenced_accuracy': influenced_acc})
    summary = {'repeats': self.repeats, 'thresholds': list(self.thresholds),
               'num_influenced_test_examples': int(len(influenced)),
               'table': table}
    estimates.write_table(output_dir, self.kind, header, rows, summary)
    self._plot(output_dir, table)
    lines = ['Removal (test accuracy, mean ± std over '
             f'{self.repeats} models):']
    for entry in table:
      threshold = ('' if entry['threshold'] is None
                   else f' θ={entry["threshold"]:g}')
      lines.append(f'  {entry["condition"]}{threshold}: removed '
                   f'{entry["num_removed"]}, accuracy '
                   f'{entry["test_accuracy"][0]:.4f} ± '
                   f'{entry["test_accuracy"][1]:.4f}')
    log('\n'.join(lines))
    return summary

  def _plot(self, output_dir, table):
    estimate_figures.removal(
        os.path.join(output_dir, estimates.REMOVAL_PNG), table)
