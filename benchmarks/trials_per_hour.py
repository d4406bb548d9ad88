r"""Trials per hour: the train binary against the plain approach.

    python benchmarks/trials_per_hour.py [--trials=24] [--setting=demo|cifar]
        [--models_per_step=4] [--bindings='TrialTrainer.jit_compile = True']

All approaches train the same model with the same schedule on subsets of the
same design and then predict on the full train and test sets:

  plain   the straightforward script: per trial a fresh keras.Model is built,
          compiled and fit on a tf.data pipeline of the subset's arrays, then
          predicts with model.predict;
  ours    the train binary's code path (train.run with gin bindings): model
          and compiled functions built once, weights re-initialised per
          trial, the subset streamed by index, records written; once with
          one model per step (K = 1) and once with K models per step.

`demo` is gin_configs/demo.gin (small ResNet, 8x8 digits, 15 epochs); `cifar`
a CIFAR-shaped ResNet-8 (width 8) on 32x32x3 images (tfds mock data for
ours, random arrays for plain: 2,000 train / 2,000 test, 100 classes, 2
epochs). Each approach runs in its own process. Prints trials/hour end to end
(process start to exit: import, set-up and tracing included) and in the
steady state (after the first trial or group), the ratio to plain, mean test
accuracy, and the machine. Extra --bindings (e.g. mixed precision, XLA) apply
to ours.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(HERE)

PLAIN = r'''
import json, os, sys, time
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, tensorflow as tf, keras
sys.path.insert(0, sys.argv[4])
import common
from tf_memorization.data import pipelines
from tf_memorization.stats import masks
from tf_memorization.training import models

setting, trials, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if setting == 'demo':
  dataset = pipelines.load_dataset('sklearn_digits', data_dir=data_dir)
  model_fn = lambda **kw: models.small_resnet(width=32, weight_decay=1e-4, **kw)
  epochs, batch = 15, 64
else:
  dataset = common.random_cifar(2000, 2000)
  model_fn = lambda **kw: models.resnet_cifar(depth=8, width=8, **kw)
  epochs, batch = 2, 64
design = masks.SubsetDesign(num_trials=trials)
n = len(dataset.train)
pipeline = pipelines.InMemoryPipeline(dataset, pipelines.Preprocessing(augment='none'))
mean, std = pipeline.mean, pipeline.std
x_train = ((dataset.train.images.astype(np.float32) - mean) / std)
x_test = ((dataset.test.images.astype(np.float32) - mean) / std)
y_train = keras.utils.to_categorical(dataset.train.labels, dataset.num_classes)
accuracies, done = [], []
for t in range(trials):
  seed = design.trial_seed(t)
  keras.utils.set_random_seed(seed)
  mask = design.mask(n, t)
  model = model_fn(input_shape=x_train.shape[1:], num_classes=dataset.num_classes)
  steps = -(-int(mask.sum()) // batch) * epochs
  lr = keras.optimizers.schedules.CosineDecay(0.1, steps)
  model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                keras.losses.CategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  ds = tf.data.Dataset.from_tensor_slices((x_train[mask], y_train[mask]))
  ds = ds.shuffle(int(mask.sum()), seed=seed).batch(batch).prefetch(2)
  model.fit(ds, epochs=epochs, verbose=0)
  model.predict(x_train, batch_size=1024, verbose=0)
  test_pred = model.predict(x_test, batch_size=1024, verbose=0).argmax(-1)
  accuracies.append(float((test_pred == dataset.test.labels).mean()))
  done.append(time.time())
print('RESULT', json.dumps({'done': done, 'groups': [1] * trials,
                            'test_accuracy': float(np.mean(accuracies))}))
'''

OURS = r'''
import json, os, sys, time
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np
from tf_memorization import train
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

setting, trials, data_dir, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
bindings = [f'SubsetDesign.num_trials = {trials}'] + json.loads(sys.argv[5])
done, groups = [], []
def log(line):
  if line.startswith('['):
    done.append(time.time())
    groups.append(int(line.split('of a group of ')[1].split(')')[0])
                  if 'of a group of' in line else 1)
if setting == 'demo':
  bindings.append('label_noise.fraction = 0.0')  # plain trains on clean labels
  train.run(workdir, [os.path.join('gin_configs', 'demo.gin')], bindings,
            data_dir=data_dir, log=log)
else:
  import tensorflow_datasets as tfds
  bindings += ["load_dataset.name = 'cifar100'",
               'TrialTrainer.model_fn = @resnet_cifar', 'resnet_cifar.depth = 8',
               'resnet_cifar.width = 8', 'TrialTrainer.epochs = 2',
               'TrialTrainer.batch_size = 64', "Preprocessing.augment = 'none'"]
  with tfds.testing.mock_data(num_examples=2000):
    train.run(workdir, [os.path.join('gin_configs', 'demo.gin')], bindings,
              data_dir=data_dir, log=log)
loaded = loading.load(workdir)
print('RESULT', json.dumps({'done': done, 'groups': groups,
                            'test_accuracy': float(loaded.test_correct.mean())}))
'''


def run_child(code, args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  start = time.time()
  out = subprocess.run([sys.executable, '-c', code, *args], cwd=REPO,
                       capture_output=True, text=True, env=env, check=False)
  end = time.time()
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  result = json.loads(out.stdout.split('RESULT', 1)[1])
  done = result['done']
  first = result['groups'][0]  # steady state: after the first trial/group
  steady = ((len(done) - first) / (done[-1] - done[first - 1])
            if len(done) > first else float('nan'))
  return {'end_to_end': 3600 * len(done) / (end - start),
          'steady': 3600 * steady, 'seconds': end - start,
          'test_accuracy': result['test_accuracy']}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=24)
  parser.add_argument('--setting', choices=('demo', 'cifar'), default='demo')
  parser.add_argument('--models_per_step', type=int, default=4)
  parser.add_argument('--bindings', action='append', default=[],
                      help='Extra gin bindings for ours.')
  parser.add_argument('--data_dir', default=os.path.join(
      tempfile.gettempdir(), 'tf_memorization_bench_tfds'))
  args = parser.parse_args()
  rows = {}
  rows['plain'] = run_child(PLAIN, [args.setting, str(args.trials),
                                    args.data_dir, HERE])
  for k in sorted({1, args.models_per_step}):
    with tempfile.TemporaryDirectory() as workdir:
      bindings = [f'TrialTrainer.models_per_step = {k}'] + args.bindings
      rows[f'ours, K={k}'] = run_child(OURS, [
          args.setting, str(args.trials), args.data_dir, workdir,
          json.dumps(bindings)])
  print(common.machine_line())
  print(f'setting {args.setting}, {args.trials} trials per approach'
        + (f', ours with {args.bindings}' if args.bindings else ''))
  print(f'  {"approach":12s} {"end to end":>14s} {"steady state":>14s}'
        f' {"ratio":>6s} {"ratio":>6s}  test accuracy')
  print(f'  {"":12s} {"trials/hour":>14s} {"trials/hour":>14s}'
        f' {"e2e":>6s} {"steady":>6s}')
  base = rows['plain']
  for name, row in rows.items():
    print(f'  {name:12s} {row["end_to_end"]:14,.0f} {row["steady"]:14,.0f}'
          f' {row["end_to_end"] / base["end_to_end"]:6.2f}'
          f' {row["steady"] / base["steady"]:6.2f}  {row["test_accuracy"]:.4f}')


if __name__ == '__main__':
  main()
