r"""The planner's predictions at a workdir's own k against what the estimator
measures there, on the demo and on three planted cases.

    python benchmarks/planner_check.py [--workdir=W ...] [--trials=128]

For each case: the controlled pairs and controlled memorized examples the
estimator measures (assessment.assess on all k trials, the estimator's
defaults: the filtered pair family, BH at 0.1), the planner's prediction at
the same k (planner.Plan on the same trials, its prior shrunk by the halves'
check), their ratio, the planner's own check (pairs within a factor 2 or both
<= 3, memorized within 1.25 or both <= 3), and the largest count of
controlled pairs it predicts at 2k-32k. Cases:
  W (each --workdir)  a workdir's records (e.g. the demo's)
  planted truth       2,000 training examples (500 memorized, 0.5), 1,000
                      test examples in 10 labels, 200 planted pairs of
                      influence 0.2-0.8 (procedures.planted_family)
  near-pure noise     one memorized example (0.6) among 5,000, every test
                      prediction independent of the masks
  planted null        the planted-truth records without planted pairs
"""

import argparse
import os
import sys
import time
import types

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tf_memorization.estimation import settings as settings_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import assessment  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import planner  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import procedures  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.stats import scores  # pylint: disable=g-import-not-at-top,wrong-import-position


def _records(masks, correct, test, train_labels, test_labels):
  k = masks.shape[0]
  metrics = {'setup_seconds': 1.0, 'train_seconds': 10.0,
             'predict_seconds': 1.0}
  return types.SimpleNamespace(
      masks=masks, train_correct=correct, test_correct=test,
      train_labels=train_labels, test_labels=test_labels,
      metadata=[{'metrics': dict(metrics), 'seed': 0} for _ in range(k)],
      num_trials=k)


def planted(k, seed=0, num_planted=200, n=2000, memorized=500, classes=10):
  """Planted truth (num_planted > 0) or the planted null (0)."""
  case = procedures.planted_family(seed, k, n_rows=memorized, n_test=1000,
                                   classes=classes, num_planted=num_planted)
  rng = np.random.default_rng([seed, 7])
  masks = rng.random((k, n)) < 0.5
  # The family's rows are the first `memorized` examples: the masks
  # planted_family drew for them, memorization 0.5 (0.4 out, 0.9 in).
  masks[:, :memorized] = case['masks']
  p = np.full((k, n), 0.99)
  p[:, :memorized] = 0.4 + 0.5 * masks[:, :memorized]
  correct = rng.random((k, n)) < p
  train_labels = np.arange(n) % classes
  return _records(masks, correct, case['values'], train_labels,
                  np.arange(1000) % classes)


def near_noise(k, seed=0, n=5000, classes=10):
  rng = np.random.default_rng([seed, 8])
  masks = rng.random((k, n)) < 0.5
  p = np.full((k, n), 0.99)
  p[:, 0] = 0.3 + 0.6 * masks[:, 0]
  correct = rng.random((k, n)) < p
  base = np.where(rng.random(1000) < 0.84, 0.99, rng.uniform(0.2, 0.9, 1000))
  test = rng.random((k, 1000)) < base
  return _records(masks, correct, test, np.arange(n) % classes,
                  np.arange(1000) % classes)


def check(name, loaded, settings):
  start = time.time()
  mem = scores.memorization(loaded.masks, loaded.train_correct)
  trust = assessment.assess(loaded, settings, mem, loaded.test_correct)
  split = trust.summary['split_half']
  plan = planner.Plan(loaded, mem.memorization, settings)
  summary = plan.summary(measured=trust.summary, split=split)
  got = summary['check']
  later = [row['pairs']['controlled'] for row in summary['rows'][1:]
           if 'controlled' in row['pairs']]
  pairs, memorized = got['pairs'], got['memorization']
  half = pairs.get('half', {})
  print(f'{name:>16s} {loaded.num_trials:5d} '
        f'{pairs["predicted"]:9.1f} {pairs["measured"]:8.0f} '
        f'{_ratio(pairs):>6s} '
        f'{half.get("predicted", float("nan")):7.1f} '
        f'{"/".join(str(v) for v in half.get("measured", [])):>8s} '
        f'{"ok" if pairs["ok"] else "FAIL":>5s} {pairs["shrink"]:6.2f} '
        f'{memorized["predicted"]:9.1f} {memorized["measured"]:8.0f} '
        f'{_ratio(memorized):>6s} {"ok" if memorized["ok"] else "FAIL":>5s} '
        f'{max(later) if later else float("nan"):9.1f}  '
        f'({time.time() - start:.0f} s)', flush=True)
  print(f'{"":>16s} {summary["advice"]}')


def _ratio(entry):
  return f'{entry["ratio"]:.2f}' if entry['ratio'] else '-'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', action='append', default=[])
  parser.add_argument('--trials', type=int, default=128)
  args = parser.parse_args()
  settings = settings_lib.Estimator(report=False)
  print(f'{"case":>16s} {"k":>5s} {"pairs:pred":>9s} {"measured":>8s} '
        f'{"ratio":>6s} {"half:pred":>7s} {"measured":>8s} {"check":>5s} '
        f'{"shrink":>6s} {"mem:pred":>9s} {"measured":>8s} {"ratio":>6s} '
        f'{"check":>5s} {"max 2k-32k":>9s}')
  for workdir in args.workdir:
    from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top
    check(os.path.basename(workdir.rstrip('/')),
          loading.load(workdir, margins=False), settings)
  k = args.trials
  check('planted truth', planted(k), settings)
  check('near-pure noise', near_noise(k), settings)
  check('planted null', planted(k, num_planted=0), settings)


if __name__ == '__main__':
  main()
