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
  variable (one process per machine; see docs/operations.md). It must be built
  before TensorFlow initialises its devices; `is_chief` says which process
  writes.
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
  if kind == 'multi_worker':
    # Before anything that initialises TensorFlow's devices (even listing
    # them): the strategy configures the collective ops at start-up.
    return _multi_worker_strategy()
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
  raise AssertionError(kind)


def _multi_worker_strategy():
  """MultiWorkerMirroredStrategy of the cluster in TF_CONFIG (one per process)."""
  if 'multi_worker' in _CACHE:
    return _CACHE['multi_worker']
  if 'TF_CONFIG' not in os.environ:
    raise ValueError('get_strategy.kind="multi_worker" needs the TF_CONFIG '
                     'environment variable (cluster and task); see docs/operations.md.')
  try:  # fail here with a clear message, not deep inside TF
    config = json.loads(os.environ['TF_CONFIG'])
    cluster = dict(config['cluster'])
    task = config['task']
    task_type, task_index = task['type'], int(task['index'])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        'TF_CONFIG must be JSON like {"cluster": {"worker": ["host0:port", '
        '"host1:port"]}, "task": {"type": "worker", "index": 0}}, got '
        f'{os.environ["TF_CONFIG"]!r} ({e!r}).') from None
  members = cluster.get(task_type)
  if task_type not in ('chief', 'worker') or not (
      members and 0 <= task_index < len(members)):
    raise ValueError(
        f'TF_CONFIG task {task_type}:{task_index} must be a "worker" or '
        f'"chief" of its cluster {cluster}.')
  try:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  except RuntimeError as e:
    if 'program startup' not in str(e):
      raise
    raise RuntimeError(
        'get_strategy.kind="multi_worker" must build its strategy before '
        'TensorFlow initialises its devices (before any op runs or any '
        'device is listed); call get_strategy() first.') from e
  _CACHE['multi_worker'] = strategy
  return strategy


def is_multi_worker(strategy):
  """Whether the workers of `strategy` span processes (and train in step)."""
  extended = getattr(strategy, 'extended', None)
  return bool(getattr(extended, '_in_multi_worker_mode', lambda: False)())


def is_chief(strategy):
  """Whether this process writes outputs (always, unless multi-worker)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  return (resolver.task_type == 'chief' or
          (resolver.task_type == 'worker' and resolver.task_id == 0 and
           'chief' not in resolver.cluster_spec().as_dict()))
