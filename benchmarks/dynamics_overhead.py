r"""What recording the learning-dynamics proxies costs a trial.

    python benchmarks/dynamics_overhead.py [--trials=16] [--repeats=3]
        [--gin_file=gin_configs/demo.gin] [--binding='...' ...]

Builds two trainers of the same config, one with TrialTrainer.record_dynamics
= True (the default: per-example loss and correctness gathered from the
step and scattered into [K, n] accumulators, dynamics.py) and one with False,
warms both up (tracing excluded), then trains the same trials (masks and
seeds of the config's subset design) with each, interleaved group by group,
`repeats` times. It prints each one's seconds per trial (wall and CPU time of
train_trials: training and the inference passes) and the median ratio of
the paired groups (robust to the machine's drift). Target: <= 1.05.
"""

import argparse
import os
import sys
import time

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'

import gin  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tf_memorization import configurables  # pylint: disable=g-import-not-at-top,unused-import
from tf_memorization.core import config  # pylint: disable=g-import-not-at-top
from tf_memorization.data import pipelines  # pylint: disable=g-import-not-at-top
from tf_memorization.stats import masks  # pylint: disable=g-import-not-at-top
from tf_memorization.training import strategy  # pylint: disable=g-import-not-at-top
from tf_memorization.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # pylint: disable=g-import-not-at-top

tf.get_logger().setLevel('ERROR')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--gin_file', default=os.path.join(
      HERE, os.pardir, 'gin_configs', 'demo.gin'))
  parser.add_argument('--binding', action='append', default=[])
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args()
  config.parse_gin([args.gin_file], args.binding)
  dataset = pipelines.load_dataset(data_dir=args.data_dir)
  dataset, _ = pipelines.label_noise(dataset)
  design = masks.SubsetDesign()
  group = gin.query_parameter('TrialTrainer.models_per_step')
  trainers = {
      flag: trainer_lib.TrialTrainer(dataset, strategy.get_strategy(),
                                     record_dynamics=flag)
      for flag in (True, False)}
  n = len(dataset.train)
  jobs = [(design.mask(n, t), design.trial_seed(t))
          for t in range(args.trials)]
  groups = [jobs[i:i + group] for i in range(0, len(jobs), group)]
  for trainer in trainers.values():  # warm-up: trace every function
    trainer.train_trials([m for m, _ in groups[0]], [s for _, s in groups[0]])
  seconds = {flag: [] for flag in trainers}
  cpu = {flag: [] for flag in trainers}
  paired = []  # with / without on the same group, one right after the other
  for _ in range(args.repeats):
    for chunk in groups:  # interleaved group by group: drift hits both
      group_seconds = {}
      for flag, trainer in trainers.items():
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.train_trials([m for m, _ in chunk], [s for _, s in chunk])
        group_seconds[flag] = time.perf_counter() - start
        seconds[flag].append(group_seconds[flag] / len(chunk))
        cpu[flag].append((time.process_time() - start_cpu) / len(chunk))
      paired.append(group_seconds[True] / group_seconds[False])
  print(common.machine_line())
  print(f'{args.trials} trials of {os.path.basename(args.gin_file)} '
        f'({len(groups)} groups of {group}), {args.repeats} repeats, each '
        'group trained with and without the proxies back to back:')
  for flag, label in ((False, 'record_dynamics = False'),
                      (True, 'record_dynamics = True ')):
    print(f'  {label}  wall {np.median(seconds[flag]):.3f} s per trial '
          f'(median; min {min(seconds[flag]):.3f}), CPU '
          f'{np.median(cpu[flag]):.3f} s')
  print(f'ratio with / without proxies (median of {len(paired)} paired '
        f'groups): wall {np.median(paired):.3f} (quartiles '
        f'{np.percentile(paired, 25):.3f}-{np.percentile(paired, 75):.3f}), '
        f'CPU {np.median(cpu[True]) / np.median(cpu[False]):.3f}; target '
        '<= 1.05')


if __name__ == '__main__':
  main()
