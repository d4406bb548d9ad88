r"""Input pipeline: does the subset pipeline keep the model fed?

    python benchmarks/pipeline_benchmark.py [--setting=demo|cifar|folder|both]
        [--seconds=5] [--zipped=4] [--folder_images=3000]

For each setting, in one process, one after the other, it measures:

  gather   (ours) pipelines.InMemoryPipeline(...).train(indices, batch, seed): the
           subset's indices are shuffled and batched, and each batch gathers
           its images from the in-memory constant;
  filter   (baseline) the obvious alternative: a tf.data pipeline over the
           whole training set, Dataset.from_tensor_slices((images, labels,
           mask)).filter(mask), shuffled over the subset, repeated, batched;
           then the same per-batch work as ours (normalise, one-hot, the same
           batched pipelines.random_crop_flip with a stateless seed per batch), the
           same map parallelism, prefetch and options;
  zipped   K gather pipelines (different masks and seeds) zipped together, as
           the trainer will feed K models per step; images counted over all K;
  model    the model's training images/s: a tf.function train step
           (GradientTape, CategoricalCrossentropy(from_logits=True) + weight
           decay, SGD(0.1, momentum=0.9)) on one fixed batch already in
           memory, so it measures the model alone.

Each pipeline is iterated from Python for --seconds after a warm-up of a few
batches (the pipeline alone, no model). Target: gather / model >= 3.

Settings: `demo` is the sklearn_digits dataset (1,442 train images, 8x8x1, no
augmentation), small_resnet(width=32), batch 64; `cifar` is 10,000 train /
1,000 test random uint8 images of 32x32x3, 100 classes, crop_flip
augmentation, ResNet-20 (resnet_cifar depth 20), batch 128. Subsets are
SubsetDesign(subset_ratio=0.7) masks. Prints images/s for each, the ratios
gather/filter and pipeline/model, and the machine.

`folder` is an image folder read from files per batch (folders.FolderPipeline,
image_folder.streaming = True): --folder_images PNGs of 32x32x3 in 10 class
sub-folders, written first, crop_flip augmentation, batch 128, against
ResNet-20's training rate (target >= 3). Then its memory: the peak resident
memory of a process that streams 200 batches from a folder of N and of 4N
images (each in its own process), which must not grow with N.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tf_memorization.data import pipelines  # pylint: disable=g-import-not-at-top

from tf_memorization.data import folders  # pylint: disable=g-import-not-at-top

from tf_memorization.stats import masks  # pylint: disable=g-import-not-at-top

from tf_memorization.training import models  # pylint: disable=g-import-not-at-top

import common  # pylint: disable=g-import-not-at-top

tf.get_logger().setLevel('ERROR')  # tfds's deprecation warnings

WARMUP_BATCHES = 5
WARMUP_STEPS = 3
# The same fixed parallelism and prefetch as pipelines.InMemoryPipeline.train.
MAP_PARALLELISM = min(8, os.cpu_count() or 1)
PREFETCH = 4


def make_setting(name, data_dir):
  """(dataset, preprocessing, model_fn, batch size) of a setting."""
  if name == 'demo':
    dataset = pipelines.load_dataset('sklearn_digits', data_dir=data_dir)
    return (dataset, pipelines.Preprocessing(augment='none'),
            lambda: models.small_resnet(
                input_shape=dataset.image_shape,
                num_classes=dataset.num_classes, width=32, weight_decay=1e-4),
            64)
  dataset = common.random_cifar(num_train=10_000, num_test=1_000)
  return (dataset, pipelines.Preprocessing(augment='crop_flip'),
          lambda: models.resnet_cifar(input_shape=(32, 32, 3),
                                      num_classes=100, depth=20),
          128)


def filter_pipeline(dataset, preprocessing, mask, batch_size, seed):
  """The baseline: the whole training set, filtered by the subset's mask."""
  mean, std, augment = preprocessing.resolve(dataset.name)
  crop = augment in ('crop', 'crop_flip')
  flip = augment in ('flip', 'crop_flip')
  padding, num_classes = preprocessing.crop_padding, dataset.num_classes

  def load(batch, batch_seed):
    images, labels = batch
    x = pipelines.normalize(images, mean, std)
    if crop or flip:
      x = pipelines.random_crop_flip(x, batch_seed, padding, crop, flip)
    return x, tf.one_hot(labels, num_classes)

  ds = tf.data.Dataset.from_tensor_slices(
      (dataset.train.images, dataset.train.labels.astype(np.int32),
       np.asarray(mask, bool)))
  ds = ds.filter(lambda image, label, keep: keep)
  ds = ds.map(lambda image, label, keep: (image, label))
  ds = ds.shuffle(int(np.sum(mask)), seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat().batch(batch_size)
  ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed).batch(2))
  ds = ds.map(load, num_parallel_calls=MAP_PARALLELISM, deterministic=True)
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.prefetch(PREFETCH).with_options(options)


def pipeline_rate(ds, images_per_batch, seconds):
  """Images/s of iterating `ds` alone, after a warm-up."""
  iterator = iter(ds)
  for _ in range(WARMUP_BATCHES):
    next(iterator)
  batches = 0
  start = time.perf_counter()
  while True:
    next(iterator)
    batches += 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      break
  del iterator
  return batches * images_per_batch / elapsed


def model_rate(model_fn, dataset, batch_size, seconds):
  """Training images/s of the model alone, on one batch held in memory."""
  keras.utils.set_random_seed(0)
  model = model_fn()
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  optimizer.build(model.trainable_variables)
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.standard_normal(
      (batch_size,) + tuple(dataset.image_shape)).astype(np.float32))
  y = tf.one_hot(rng.integers(0, dataset.num_classes, batch_size),
                 dataset.num_classes)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      loss = loss_fn(y, logits)
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  for _ in range(WARMUP_STEPS):
    step(x, y).numpy()
  steps = 0
  start = time.perf_counter()
  while True:
    step(x, y).numpy()
    steps += 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      break
  return steps * batch_size / elapsed


def run_setting(name, args):
  dataset, preprocessing, model_fn, batch = make_setting(name, args.data_dir)
  n = len(dataset.train)
  design = masks.SubsetDesign(num_trials=max(2, args.zipped))
  mask, seed = design.mask(n, 0), design.trial_seed(0)
  indices = np.flatnonzero(mask)
  _, _, augment = preprocessing.resolve(dataset.name)
  shape = 'x'.join(str(d) for d in dataset.image_shape)
  print(f'setting {name} ({shape}, batch {batch}, {len(indices):,}-example '
        f'subset of {n:,}, augment {augment}):', flush=True)

  pipeline = pipelines.InMemoryPipeline(dataset, preprocessing)
  gather = pipeline_rate(pipeline.train(indices, batch, seed), batch,
                         args.seconds)
  print(f'  {"gather pipeline (ours)":28s} {gather:>10,.0f} images/s',
        flush=True)
  baseline = pipeline_rate(
      filter_pipeline(dataset, preprocessing, mask, batch, seed), batch,
      args.seconds)
  print(f'  {"filter pipeline (baseline)":28s} {baseline:>10,.0f} images/s   '
        f'ratio gather/filter {gather / baseline:.1f}', flush=True)
  k = args.zipped
  zipped = tf.data.Dataset.zip(tuple(
      pipeline.train(np.flatnonzero(design.mask(n, t)), batch,
                     design.trial_seed(t)) for t in range(k)))
  zipped_rate = pipeline_rate(zipped, k * batch, args.seconds)
  label = f'{k} zipped gather pipelines'
  print(f'  {label:28s} {zipped_rate:>10,.0f} images/s   '
        f'(all {k} streams)', flush=True)
  model = model_rate(model_fn, dataset, batch, args.seconds)
  print(f'  {"model training step":28s} {model:>10,.0f} images/s   '
        f'ratio pipeline/model {gather / model:.1f} (target >= 3); '
        f'{k} zipped/model {zipped_rate / model:.1f}', flush=True)
  return {'gather': gather, 'filter': baseline, 'zipped': zipped_rate,
          'model': model}


def write_folder(root, count, side=32, classes=10, seed=0):
  """`count` random side x side x 3 PNGs in `classes` class sub-folders."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i in range(count):
    directory = os.path.join(root, f'class_{i % classes}')
    os.makedirs(directory, exist_ok=True)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(image).save(os.path.join(directory, f'{i:06d}.png'))
  return root


def _streaming_folder(root):
  dataset = folders.image_folder(root=root, streaming=True)
  return dataset, folders.FolderPipeline(
      dataset, pipelines.Preprocessing(augment='crop_flip'))


def memory_probe(root, batches=200, batch_size=128):
  """Peak resident MiB of streaming `batches` batches from the folder."""
  import resource  # pylint: disable=g-import-not-at-top
  dataset, pipeline = _streaming_folder(root)
  indices = np.flatnonzero(masks.SubsetDesign(num_trials=2).mask(
      len(dataset.train), 0))
  iterator = iter(pipeline.train(indices, batch_size, 0))
  for _ in range(batches):
    next(iterator)
  print(json.dumps({'peak_mib': resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024, 'images': len(dataset.train)}))


def run_folder(args):
  with tempfile.TemporaryDirectory() as root:
    small = write_folder(os.path.join(root, 'small'), args.folder_images)
    dataset, pipeline = _streaming_folder(small)
    n = len(dataset.train)
    design = masks.SubsetDesign(num_trials=2)
    indices = np.flatnonzero(design.mask(n, 0))
    batch = 128
    print(f'setting folder (32x32x3 PNG files read per batch, batch {batch}, '
          f'{len(indices):,}-example subset of {n:,}, augment crop_flip):',
          flush=True)
    rate = pipeline_rate(pipeline.train(indices, batch, design.trial_seed(0)),
                         batch, args.seconds)
    print(f'  {"folder pipeline (streaming)":28s} {rate:>10,.0f} images/s',
          flush=True)
    model = model_rate(
        lambda: models.resnet_cifar(dataset.image_shape, dataset.num_classes,
                                    depth=20),
        dataset, batch, args.seconds)
    print(f'  {"ResNet-20 training step":28s} {model:>10,.0f} images/s   '
          f'ratio pipeline/model {rate / model:.1f} (target >= 3)',
          flush=True)
    large = write_folder(os.path.join(root, 'large'), 4 * args.folder_images)
    peaks = []
    for folder in (small, large):
      out = subprocess.run(
          [sys.executable, __file__, f'--memory_probe={folder}'],
          check=True, capture_output=True, text=True).stdout
      peaks.append(json.loads(out.strip().splitlines()[-1]))
    print(f'  peak memory streaming 200 batches: {peaks[0]["peak_mib"]:,.0f} '
          f'MiB with {peaks[0]["images"]:,} training images, '
          f'{peaks[1]["peak_mib"]:,.0f} MiB with {peaks[1]["images"]:,} '
          f'(ratio {peaks[1]["peak_mib"] / peaks[0]["peak_mib"]:.2f}; '
          'held in memory the images would grow 4x)', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--setting', choices=('demo', 'cifar', 'folder', 'both'),
                      default='both')
  parser.add_argument('--folder_images', type=int, default=3000,
                      help='Images of the `folder` setting (and 4x that).')
  parser.add_argument('--memory_probe', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--seconds', type=float, default=5.0,
                      help='Timed seconds per measurement (after warm-up).')
  parser.add_argument('--zipped', type=int, default=4,
                      help='K, the number of zipped per-trial pipelines.')
  parser.add_argument('--data_dir', default=os.path.join(
      tempfile.gettempdir(), 'tf_memorization_bench_tfds'))
  args = parser.parse_args()
  if args.memory_probe:
    memory_probe(args.memory_probe)
    return
  print(common.machine_line(), flush=True)
  if args.setting == 'folder':
    run_folder(args)
    return
  settings = ('demo', 'cifar') if args.setting == 'both' else (args.setting,)
  for name in settings:
    run_setting(name, args)


if __name__ == '__main__':
  main()
