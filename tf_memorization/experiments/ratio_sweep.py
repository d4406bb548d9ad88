"""The subset-ratio sweep: the same estimates at other subset ratios, in
the same workdir, against the main run. Writes ratio_sweep.csv / .json.
"""

import dataclasses

import gin
import numpy as np

from tf_memorization.core import errors
from tf_memorization.experiments import base
from tf_memorization.stats import masks as masks_lib
from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.training import runs
from tf_memorization.workdir import estimates


@base.register('ratio_sweep')
@gin.configurable
class SubsetRatioSweep(base.Experiment):
  """The same estimates at other subset ratios, in the same workdir.

  Args:
    ratios: subset ratios to add (the main run's ratio is the reference).
    num_trials: trials per ratio (None: as many as the main run has).
  """

  def __init__(self, ratios=(0.5, 0.9), num_trials=None):
    name = 'SubsetRatioSweep.'
    self.ratios = errors.sequence(
        name + 'ratios', ratios,
        lambda n, v: errors.number(n, v, above=0, below=1))
    self.num_trials = errors.integer(name + 'num_trials', num_trials,
                                     minimum=2, allow_none=True)

  def run(self, inputs):
    workdir, output_dir, setup, log = (inputs.workdir, inputs.output_dir,
                                       inputs.setup, inputs.log)
    main, main_mem = inputs.records, inputs.memorization
    k = self.num_trials or main.num_trials
    main_design = setup.design
    header = list(estimates.RATIO_SWEEP_HEADER)
    main_ratio = main_design.subset_ratio
    entries = [(main_ratio, float(main.masks.mean()), main.num_trials,
                float(main.test_correct.mean()), main_mem, 1.0)]
    for ratio in self.ratios:
      design = masks_lib.SubsetDesign(num_trials=max(k, 2),
                                      subset_ratio=ratio,
                                      design=main_design.design,
                                      seed=main_design.seed)
      sub = dataclasses.replace(setup, design=design,
                                fingerprint=runs.config_fingerprint(
                                    setup.dataset_info, design,
                                    setup.trainer.pretrained_digests))
      n = len(setup.dataset.train)
      jobs = [runs.Job(t, design.mask(n, t), design.trial_seed(t),
                       {'subset_ratio': ratio}, from_design=True)
              for t in range(design.num_trials)]
      loaded = base.run_jobs(workdir, f'ratio_{ratio:g}', sub, jobs, log)
      mem = scores.memorization(loaded.masks, loaded.train_correct)
      spearman = ranks.correlations(mem.memorization,
                                    main_mem.memorization)[1]
      effective = float(loaded.masks.mean())
      if abs(effective - ratio) > 0.05:
        log(f'Warning: subset ratio {ratio:g} with {loaded.num_trials} '
            f'trials of the {design.design} design trains on {effective:.3f} '
            'of the data; use more trials.')
      entries.append((ratio, effective, loaded.num_trials,
                      float(loaded.test_correct.mean()), mem, spearman))
    rows, table = [], []
    for ratio, effective, trials, accuracy, mem, spearman in sorted(
        entries, key=lambda e: e[0]):
      row = [ratio, effective, trials, accuracy,
             int(np.nansum(mem.memorization >= 0.25)),
             float(np.nanmedian(mem.stderr)), float(np.nanmean(mem.stderr)),
             spearman, scores.lemma_2_1_bound(trials, effective)]
      rows.append(row)
      table.append(dict(zip(header, row)))
    summary = {'main_subset_ratio': main_ratio, 'table': table}
    estimates.write_table(output_dir, self.kind, header, rows, summary)
    log('Subset-ratio sweep (ratio: examples with mem >= 0.25, mean stderr, '
        'Spearman with the main run):\n' + '\n'.join(
            f'  {r[0]:g}: {r[4]}, {r[6]:.4f}, {r[7]:.3f}' for r in rows))
    return summary
