r"""The planner's predictions from a pilot against what all the trials give.

    python benchmarks/planner_check.py --workdir=W [--pilot=32]
        [--gin_bindings='Estimator.pair_null = 0.0']

Plans from the first --pilot trials of W (planner.Plan on
loading.Records.first), predicts the figures at all k of W, and measures
them on all k:
  memorization stderr   RMS over all examples (the plain p(1 - p) variances
                        of the estimator), and the 0.9 quantile over the
                        examples the trials disagree on
  influence stderr      RMS over the pair family of all k (every pair, or
                        the planner's uniform sample of it)
  controlled sets       sizes of the controlled memorized and pair sets
                        (assessment.assess on all k)
Prints each predicted / measured ratio.
"""

import argparse
import os
import sys

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tf_memorization.core import config  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.estimation import settings as settings_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import assessment  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import planner  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import scores  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top,wrong-import-position


def _measured_stderr(masks, values, quantile):
  """(RMS, quantile over the uncertain) of the plain standard errors."""
  diff = scores.difference_of_means(masks, values)
  se = diff['stderr'][np.isfinite(diff['stderr'])]
  uncertain = se[se > 0]
  return (float(np.sqrt(np.mean(se * se))),
          float(np.quantile(uncertain, quantile)) if len(uncertain) else 0.0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--pilot', type=int, default=32)
  parser.add_argument('--gin_bindings', action='append', default=[])
  args = parser.parse_args()
  config.parse_gin([], args.gin_bindings)
  settings = settings_lib.Estimator(report=False)
  loaded = loading.load(args.workdir, margins=False)
  k = loaded.num_trials
  pilot = loaded.first(args.pilot)
  pilot_mem = scores.memorization(pilot.masks, pilot.train_correct)
  plan = planner.Plan(pilot, pilot_mem.memorization, settings)
  predicted = plan.at(k)

  mem = scores.memorization(loaded.masks, loaded.train_correct)
  rms, q = _measured_stderr(loaded.masks, loaded.train_correct,
                            plan.quantile)
  rows, cols, _ = planner.sample_pairs(
      loaded, mem.memorization, settings.memorization_threshold,
      settings.same_label, 20000, 0)
  pair_rms, _ = _measured_stderr(loaded.masks[:, rows],
                                 np.asarray(loaded.test_correct)[:, cols],
                                 plan.quantile)
  trust = assessment.assess(loaded, settings, mem, loaded.test_correct)
  measured = {'memorization': {'stderr_rms': rms, 'stderr_quantile': q,
                               'controlled': trust.summary['memorized'][
                                   'controlled']},
              'pairs': {'stderr_rms': pair_rms,
                        'controlled': trust.summary['pairs']['controlled']}}
  print(f'{args.workdir}: planned from the first {args.pilot} of {k} trials; '
        f'predicted at k = {k} against measured on all {k}:')
  for part, figures in measured.items():
    for key, value in figures.items():
      guess = predicted[part][key]
      ratio = guess / value if value else float('nan')
      print(f'  {part:12s} {key:16s} predicted {guess:10.4f}  measured '
            f'{value:10.4f}  ratio {ratio:.3f}')
  print(f'  trials for memorization stderr <= {settings.target_stderr:g} '
        f'(q{plan.quantile:g}): from the pilot '
        f'{plan.trials_for_stderr(settings.target_stderr)}, from all k '
        f'{planner.Plan(loaded, mem.memorization, settings).trials_for_stderr(settings.target_stderr)}')


if __name__ == '__main__':
  main()
