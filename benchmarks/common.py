"""What the benchmarks share: the machine line and the two small settings."""

import os
import platform


def cpu_model():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def machine_line():
  """e.g. 'machine: x86_64, 2 cores (AMD EPYC), tensorflow 2.21.0, keras 3.15.1'."""
  versions = []
  for name in ('tensorflow', 'keras'):
    try:
      module = __import__(name)
      versions.append(f'{name} {module.__version__}')
    except ImportError:
      pass
  gpus = ''
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    count = len(tf.config.list_physical_devices('GPU'))
    gpus = f', {count} GPU(s)' if count else ', no GPU'
  except ImportError:
    pass
  return (f'machine: {platform.machine()}, {os.cpu_count()} cores '
          f'({cpu_model()}){gpus}, ' + ', '.join(versions))


def random_cifar(num_train=2000, num_test=500, num_classes=100, seed=0):
  """A CIFAR-shaped pipelines.Dataset of random 32x32x3 images (no download)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_memorization.data import pipelines  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def split(n, prefix):
    return pipelines.Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                           rng.integers(0, num_classes, n),
                           np.array([f'{prefix}{i}' for i in range(n)]))

  return pipelines.Dataset('cifar100', 'random', num_classes,
                           split(num_train, 'train'), split(num_test, 'test'))
