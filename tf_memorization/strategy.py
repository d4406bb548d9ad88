"""The one place that chooses a tf.distribute strategy.

Build the model, optimizer and metrics inside `strategy.scope()`.

* 'auto': MirroredStrategy when more than one GPU is visible, else TF's
  default strategy (no input distribution: its per-trial iterators are
  cheaper to tear down than OneDeviceStrategy's multi-device iterator).
* 'default': TF's default (no-op) strategy.
* 'one_device': OneDeviceStrategy on the first GPU, or the CPU.
* 'mirrored': MirroredStrategy over all visible GPUs; with no GPU, over the
  logical CPU devices (`split_cpu` makes them; tests use 2).
* 'multi_worker': MultiWorkerMirroredStrategy from the TF_CONFIG environment
  variable (one process per machine; see the README).
"""

import json
import os

import gin
import tensorflow as tf

KINDS = ('auto', 'default', 'one_device', 'mirrored', 'multi_worker')
# One strategy object per kind and device set for the whole process: two
# MirroredStrategy objects hand out the same collective instance keys, and
# their all-reduces then collide ("Shape mismatch in the collective instance").
_CACHE = {}


def split_cpu(num_devices):
  """Splits the CPU into `num_devices` logical devices.

  Must run before TensorFlow initialises its devices (before any op runs);
  when they are already initialised with that many devices this is a no-op.
  """
  cpus = tf.config.list_physical_devices('CPU')
  wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
  try:
    tf.config.set_logical_device_configuration(cpus[0], wanted)
  except RuntimeError as e:
    if len(tf.config.list_logical_devices('CPU')) != num_devices:
      raise RuntimeError(
          f'Cannot split the CPU into {num_devices} devices: TensorFlow is '
          'already initialised. Set it before any TensorFlow op runs.') from e


@gin.configurable
def get_strategy(kind='auto', num_cpu_devices=None):
  """Returns a tf.distribute.Strategy.

  Args:
    kind: one of KINDS.
    num_cpu_devices: with no GPU, split the CPU into this many logical
      devices first (for testing 'mirrored' on a CPU-only machine).
  """
  if kind not in KINDS:
    raise ValueError(f'get_strategy.kind must be one of {KINDS}, got {kind!r}.')
  if num_cpu_devices:
    split_cpu(num_cpu_devices)
  gpus = tf.config.list_logical_devices('GPU')
  if kind == 'auto':
    kind = 'mirrored' if len(gpus) > 1 else 'default'
  if kind == 'default':
    return tf.distribute.get_strategy()
  if kind == 'one_device':
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')
  if kind == 'mirrored':
    devices = tuple([d.name for d in gpus] if gpus else
                    [d.name for d in tf.config.list_logical_devices('CPU')])
    key = (kind, devices)
    if key not in _CACHE:
      _CACHE[key] = tf.distribute.MirroredStrategy(list(devices))
    return _CACHE[key]
  if 'TF_CONFIG' not in os.environ:
    raise ValueError('get_strategy.kind="multi_worker" needs the TF_CONFIG '
                     'environment variable (cluster and task); see README.')
  json.loads(os.environ['TF_CONFIG'])  # fail here, not deep inside TF
  if 'multi_worker' not in _CACHE:
    _CACHE['multi_worker'] = tf.distribute.MultiWorkerMirroredStrategy()
  return _CACHE['multi_worker']


def is_chief(strategy):
  """Whether this process writes outputs (always, unless multi-worker)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  return (resolver.task_type == 'chief' or
          (resolver.task_type == 'worker' and resolver.task_id == 0 and
           'chief' not in resolver.cluster_spec().as_dict()))
