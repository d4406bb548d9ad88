"""Direct leave-one-out: memorization measured by leaving single examples
out of full-data training, against the subsampled estimate. Writes
leave_one_out.csv / .json / .png.
"""

import os

import gin
import numpy as np

from tf_memorization import errors
from tf_memorization import estimates
from tf_memorization import runs
from tf_memorization import scores
from tf_memorization.experiments import base


@base.register('leave_one_out')
@gin.configurable
class LeaveOneOutExperiment(base.Experiment):
  """Memorization estimated directly, by leaving single examples out.

  For each chosen example i: r models on the full training set and r on the
  full set minus i; mem_loo(i) = mean C_full(i) - mean C_without_i(i), next to
  the subsampled estimate, both with standard errors.

  Args:
    examples: training indices, or 'auto': the `per_group` highest and lowest
      by memorization and `per_group` random ones.
    per_group: size of each 'auto' group.
    repeats: r.
  """

  def __init__(self, examples='auto', per_group=10, repeats=3):
    name = 'LeaveOneOutExperiment.'
    if examples != 'auto':
      examples = errors.sequence(name + 'examples', examples,
                                 lambda n, v: errors.integer(n, v, minimum=0))
    self.examples = examples
    self.per_group = errors.integer(name + 'per_group', per_group, minimum=1)
    self.repeats = errors.integer(name + 'repeats', repeats, minimum=1)

  def chosen(self, memorization, seed):
    if self.examples != 'auto':
      return np.asarray(self.examples, np.int64)
    defined = np.flatnonzero(np.isfinite(memorization))
    order = defined[np.argsort(memorization[defined], kind='stable')]
    top, bottom = order[::-1][:self.per_group], order[:self.per_group]
    rest = np.setdiff1d(defined, np.concatenate([top, bottom]))
    rng = np.random.default_rng([seed, 0x100])
    random = rng.choice(rest, size=min(self.per_group, len(rest)),
                        replace=False)
    return np.unique(np.concatenate([top, bottom, random]))

  def jobs(self, setup, chosen):
    n = len(setup.dataset.train)
    jobs = []
    for target in [None] + [int(i) for i in chosen]:
      for repeat in range(self.repeats):
        mask = np.ones(n, bool)
        if target is not None:
          mask[target] = False
        index = len(jobs)
        seed = base.seed_of(setup.design.seed, 'loo', index)
        jobs.append(runs.Job(index, mask, seed,
                             {'left_out': -1 if target is None else target,
                              'repeat': repeat}))
    return jobs

  def run(self, inputs):
    output_dir, setup, log = inputs.output_dir, inputs.setup, inputs.log
    mem = inputs.memorization
    chosen = self.chosen(mem.memorization, setup.design.seed)
    jobs = self.jobs(setup, chosen)
    loaded = base.run_jobs(inputs.workdir, 'leave_one_out', setup, jobs, log)
    rows_of = {}
    for row, meta in enumerate(loaded.metadata):
      rows_of.setdefault(meta['left_out'], []).append(row)
    full_rows = rows_of[-1]
    header = ['index', 'memorization_loo', 'memorization_loo_stderr',
              'memorization_subsampled', 'memorization_subsampled_stderr']
    rows, direct, subsampled = [], [], []
    for i in chosen:
      with_i = loaded.train_correct[full_rows, i].astype(np.float64)
      without_i = loaded.train_correct[rows_of[int(i)], i].astype(np.float64)
      p_in, p_out = with_i.mean(), without_i.mean()
      stderr = scores.difference_stderr(p_in * (1 - p_in), len(with_i),
                                        p_out * (1 - p_out), len(without_i))
      rows.append([int(i), p_in - p_out, stderr, float(mem.memorization[i]),
                   float(mem.stderr[i])])
      direct.append(p_in - p_out)
      subsampled.append(mem.memorization[i])
    pearson, spearman = scores.rank_correlations(direct, subsampled)
    summary = {'examples': [int(i) for i in chosen], 'repeats': self.repeats,
               'pearson': pearson, 'spearman': spearman,
               'mean_abs_difference': float(np.nanmean(np.abs(
                   np.asarray(direct) - np.asarray(subsampled))))}
    estimates.write_table(output_dir, self.kind, header, rows, summary)
    self._plot(output_dir, rows)
    log(f'Leave-one-out vs subsampled memorization on {len(chosen)} examples: '
        f'Spearman {spearman:.3f}, Pearson {pearson:.3f}.')
    return summary

  def _plot(self, output_dir, rows):
    plt = estimates.pyplot()
    rows = np.asarray(rows, np.float64)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.errorbar(rows[:, 3], rows[:, 1], xerr=rows[:, 4], yerr=rows[:, 2],
                fmt='o', capsize=2)
    ax.plot([-1, 1], [-1, 1], color='grey', lw=0.8)
    ax.set_xlim(-0.3, 1.05)
    ax.set_ylim(-0.3, 1.05)
    ax.set_xlabel('subsampled estimate')
    ax.set_ylabel('direct leave-one-out')
    ax.set_title('Memorization: estimate vs leave-one-out')
    estimates.save_figure(
        fig, os.path.join(output_dir, estimates.LEAVE_ONE_OUT_PNG))
    plt.close(fig)
