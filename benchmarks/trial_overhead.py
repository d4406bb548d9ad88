r"""Per-trial overhead: what a demo trial spends outside training and inference.

    python benchmarks/trial_overhead.py [--trials=16] [--models_per_step=4]
        [--gin_file=gin_configs/demo.gin] [--in_graph_input=auto|False]
        [--binding='TrialTrainer.jit_compile = True' ...]

Runs the train binary's loop (runs.train_jobs, records written) on the demo
config after one warm-up group (tracing excluded) and splits each trial's wall
time into:

  train steps   time inside the compiled multi-step train function;
  inference     the predict passes over the full train and test sets;
  overhead      everything else: re-initialising weights and optimizer, the
                subset pipeline's construction, syncing, computing metrics,
                writing the record and TensorBoard scalars, logging.

It also times the same compiled train function on one fixed batch (an input
that costs nothing) for the same number of steps: `train steps` minus this
model-bound time is time the model waited for its input; the strict overhead
counts that wait (with in-graph input: the time spent building batches
inside the step) as overhead too. Target: overhead <= 10% of a trial's wall
time (the baseline is the trial's wall time, measured in the same run).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tf_memorization.core import config  # pylint: disable=g-import-not-at-top
from tf_memorization.training import runs  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # pylint: disable=g-import-not-at-top

tf.get_logger().setLevel('ERROR')


class Timed:
  """Wraps a callable and adds its wall time to `seconds`."""

  def __init__(self, fn):
    self.fn, self.seconds, self.calls = fn, 0.0, 0

  def __call__(self, *args, **kwargs):
    start = time.perf_counter()
    out = self.fn(*args, **kwargs)
    if isinstance(out, tf.Tensor):
      out = tf.identity(out)
      out.numpy()  # wait for the device
    self.seconds += time.perf_counter() - start
    self.calls += 1
    return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=16)
  parser.add_argument('--models_per_step', type=int, default=2)
  parser.add_argument('--gin_file', default=os.path.join(
      os.path.dirname(HERE), 'gin_configs', 'demo.gin'))
  parser.add_argument('--binding', action='append', default=[],
                      help="Extra gin bindings, e.g. 'TrialTrainer.jit_compile = True'.")
  parser.add_argument('--in_graph_input', default="'auto'",
                      help='TrialTrainer.in_graph_input binding.')
  parser.add_argument('--data_dir', default=os.path.join(
      tempfile.gettempdir(), 'tf_memorization_bench_tfds'))
  args = parser.parse_args()
  k = args.models_per_step
  config.parse_gin([args.gin_file], [
      f'SubsetDesign.num_trials = {args.trials + k}',
      f'TrialTrainer.models_per_step = {k}',
      f'TrialTrainer.in_graph_input = {args.in_graph_input}',
      f'load_dataset.data_dir = {args.data_dir!r}'] + args.binding)
  with tempfile.TemporaryDirectory() as workdir:
    setup = runs.build(workdir)
    trainer, design = setup.trainer, setup.design
    n = len(setup.dataset.train)
    jobs = [runs.Job(t, design.mask(n, t), design.trial_seed(t))
            for t in range(args.trials + k)]
    # Warm-up: one group traces the compiled functions.
    runs.train_jobs(setup, os.path.join(workdir, 'warmup'), jobs[:k],
                    log=lambda line: None)
    # pylint: disable=protected-access
    name = ('_train_steps_in_graph' if trainer.in_graph_input
            else '_train_steps')
    train_steps = Timed(getattr(trainer, name))
    setattr(trainer, name, train_steps)
    bound_fn = trainer._train_steps
    # pylint: enable=protected-access
    predict = Timed(trainer.inference_model.predict)
    trainer.inference_model.predict = predict
    start = time.perf_counter()
    runs.train_jobs(setup, workdir, jobs[k:], log=lambda line: None)
    wall = time.perf_counter() - start
    trained = len(jobs) - k
    total_steps = sum(trainer.total_steps(job.mask) for job in jobs[k:])

    # The same compiled function on one fixed batch: the model-bound time.
    indices = np.flatnonzero(jobs[0].mask)
    batch = next(iter(tf.data.Dataset.zip(tuple(
        trainer.pipeline.train(indices, trainer.batch_size, s)
        for s in range(k)))))
    fixed = iter(trainer.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    steps = tf.constant(trainer.steps_per_epoch(len(indices)), tf.int64)
    bound_fn(fixed, steps).numpy()
    timer = Timed(bound_fn)
    for _ in range(trainer.epochs):
      timer(fixed, steps)
    per_step = timer.seconds / (trainer.epochs * int(steps))
    model_bound = per_step * total_steps / k  # steps of K trials at once

  per_trial = wall / trained
  train_s = train_steps.seconds / trained
  infer_s = predict.seconds / trained
  bound_s = model_bound / trained
  overhead = per_trial - train_s - infer_s
  strict = per_trial - bound_s - infer_s
  print(common.machine_line())
  print(f'{os.path.basename(args.gin_file)}: {trained} trials, {k} per step, '
        f'{trainer.epochs} epochs, batch {trainer.batch_size}, input '
        + ('in the graph' if trainer.in_graph_input else 'from tf.data')
        + ''.join(f'; {b}' for b in args.binding))
  print(f'  wall time per trial        {per_trial:6.3f} s   100.0%')
  print(f'  train steps                {train_s:6.3f} s   '
        f'{100 * train_s / per_trial:5.1f}%   (model-bound {bound_s:.3f} s)')
  print(f'  inference (train + test)   {infer_s:6.3f} s   '
        f'{100 * infer_s / per_trial:5.1f}%')
  print(f'  overhead                   {overhead:6.3f} s   '
        f'{100 * overhead / per_trial:5.1f}%   (target <= 10%)')
  print(f'  strict overhead            {strict:6.3f} s   '
        f'{100 * strict / per_trial:5.1f}%   (input building/waits counted)')


if __name__ == '__main__':
  main()
