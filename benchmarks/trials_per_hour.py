r"""Trials per hour: the trial trainer against the plain approach.

    python benchmarks/trials_per_hour.py [--trials=6] [--setting=demo|cifar]

Both train the same model with the same schedule on the same subsets and then
predict on the full train and test sets:

  plain  the straightforward script: per trial a fresh keras.Model is built,
         compiled and fit on a tf.data pipeline of the subset's arrays;
  ours   training.TrialTrainer: model and compiled functions built once, each
         trial re-initialises the weights and streams the subset by index.

`demo` is gin_configs/demo.gin (small ResNet, 8x8 digits, 15 epochs); `cifar`
a CIFAR-shaped ResNet-8 (width 8) on 32x32x3 random images (2,000 train /
500 test, 100 classes, 2 epochs). Each approach runs in its own process.
Prints trials/hour for each, their ratio, mean test accuracy and the machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

CHILD = r'''
import json, os, sys, time
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, tensorflow as tf, keras
from tf_memorization import data, masks, models, strategy, training

approach, setting, trials, data_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if setting == 'demo':
  dataset = data.load_dataset('sklearn_digits', data_dir=data_dir)
  model_fn = lambda **kw: models.small_resnet(width=32, weight_decay=1e-4, **kw)
  epochs, batch = 15, 64
else:
  rng = np.random.default_rng(0)
  def split(n, prefix):
    return data.Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                      rng.integers(0, 100, n), np.array([f'{prefix}{i}' for i in range(n)]))
  dataset = data.Dataset('cifar100', 'random', 100, split(2000, 'tr'), split(500, 'te'))
  model_fn = lambda **kw: models.resnet_cifar(depth=8, width=8, **kw)
  epochs, batch = 2, 64
design = masks.SubsetDesign(num_trials=trials)
n = len(dataset.train)
pipeline = data.InMemoryPipeline(dataset, data.Preprocessing(augment='none'))
mean, std = pipeline.mean, pipeline.std
accuracies = []
start = time.perf_counter()
if approach == 'ours':
  trainer = training.TrialTrainer(
      dataset, strategy.get_strategy('auto'), model_fn=model_fn, epochs=epochs,
      batch_size=batch, preprocessing=data.Preprocessing(augment='none'))
  for t in range(trials):
    result = trainer.train_trial(design.mask(n, t), design.trial_seed(t))
    accuracies.append(result.metrics['test_accuracy'])
else:
  x_train = ((dataset.train.images.astype(np.float32) - mean) / std)
  x_test = ((dataset.test.images.astype(np.float32) - mean) / std)
  y_train = keras.utils.to_categorical(dataset.train.labels, dataset.num_classes)
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
elapsed = time.perf_counter() - start
print('RESULT', json.dumps({'seconds': elapsed, 'trials': trials,
                            'test_accuracy': float(np.mean(accuracies))}))
'''


def run(approach, setting, trials, data_dir):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([sys.executable, '-c', CHILD, approach, setting,
                        str(trials), data_dir], capture_output=True,
                       text=True, env=env, check=False)
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.split('RESULT', 1)[1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=6)
  parser.add_argument('--setting', choices=('demo', 'cifar'), default='demo')
  parser.add_argument('--data_dir', default=os.path.join(
      tempfile.gettempdir(), 'tf_memorization_bench_tfds'))
  args = parser.parse_args()
  results = {a: run(a, args.setting, args.trials, args.data_dir)
             for a in ('plain', 'ours')}
  rate = {a: 3600 * r['trials'] / r['seconds'] for a, r in results.items()}
  print(f'machine: {platform.machine()}, {os.cpu_count()} cores; setting '
        f'{args.setting}, {args.trials} trials per approach (wall time '
        'includes building, tracing and the first trial)')
  for a in ('plain', 'ours'):
    print(f'  {a:5s}  {rate[a]:8.0f} trials/hour  ({results[a]["seconds"]:.1f} s'
          f', mean test accuracy {results[a]["test_accuracy"]:.4f})')
  print(f'  ratio ours / plain: {rate["ours"] / rate["plain"]:.2f}')


if __name__ == '__main__':
  main()
