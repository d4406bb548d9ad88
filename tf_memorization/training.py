"""Train one trial under a tf.distribute strategy and predict on everything.

`TrialTrainer` builds the model, optimizer and compiled Keras functions once per
process. Each trial then re-initialises every weight from the trial's seed,
restores the optimizer's initial state, trains on the trial's subset and runs
one inference pass over the full train and test sets. No model is rebuilt and
no function is retraced between trials of the same config: for small models
set-up would otherwise dominate the trial.
"""

import dataclasses
import math
import time

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_memorization import data as data_lib

SCHEDULES = ('cosine', 'piecewise', 'constant')
# Layer attributes that hold weights, each re-initialised by the layer's
# `<name>_initializer`.
_WEIGHT_ATTRIBUTES = ('kernel', 'bias', 'gamma', 'beta', 'moving_mean',
                      'moving_variance', 'embeddings', 'depthwise_kernel',
                      'pointwise_kernel')


class TrialLearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up, then cosine decay to 0, piecewise decay, or constant.

  `total_steps` is a variable so that trials with subsets of different sizes
  (the balanced design) share one optimizer and one compiled train step.
  """

  def __init__(self, base_learning_rate, total_steps, schedule='cosine',
               boundaries=(), decay_factor=0.1, warmup_fraction=0.0):
    if schedule not in SCHEDULES:
      raise ValueError(f'learning-rate schedule must be one of {SCHEDULES}, '
                       f'got {schedule!r}.')
    self.base_learning_rate = float(base_learning_rate)
    self.total_steps = total_steps
    self.schedule = schedule
    self.boundaries = tuple(float(b) for b in boundaries)  # fractions of total
    self.decay_factor = float(decay_factor)
    self.warmup_fraction = float(warmup_fraction)  # of total_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    total = tf.cast(self.total_steps, tf.float32)
    warmup_steps = self.warmup_fraction * total
    lr = tf.constant(self.base_learning_rate, tf.float32)
    if self.schedule == 'cosine':
      progress = tf.clip_by_value(
          (step - warmup_steps) / tf.maximum(total - warmup_steps, 1.0),
          0.0, 1.0)
      lr = lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
    elif self.schedule == 'piecewise':
      for boundary in self.boundaries:
        lr = tf.where(step >= boundary * total, lr * self.decay_factor, lr)
    if self.warmup_fraction > 0:
      lr = lr * tf.minimum(1.0, (step + 1.0) / tf.maximum(warmup_steps, 1.0))
    return lr

  def get_config(self):
    return {'base_learning_rate': self.base_learning_rate,
            'total_steps': int(self.total_steps.numpy()),
            'schedule': self.schedule, 'boundaries': self.boundaries,
            'decay_factor': self.decay_factor,
            'warmup_fraction': self.warmup_fraction}


@dataclasses.dataclass
class TrialResult:
  """What one trial produced: predictions on every train and test example."""
  train_pred: np.ndarray    # int [n] predicted class
  train_prob: np.ndarray    # float [n] softmax probability of the true class
  train_margin: np.ndarray  # float [n] true logit minus the largest other
  test_pred: np.ndarray
  test_prob: np.ndarray
  test_margin: np.ndarray
  metrics: dict


def _derived_seed(seed, *keys):
  return int(np.random.default_rng([seed, *keys]).integers(0, 2**31 - 1))


@gin.configurable
class TrialTrainer:
  """Trains trials of one config; see the module docstring.

  Args:
    dataset: a `data.Dataset`.
    strategy: a tf.distribute.Strategy (see strategy.get_strategy).
    model_fn: a model builder from models.py, e.g. @resnet50.
    epochs: passes over the subset per trial.
    batch_size: global batch size (split over the strategy's replicas).
    eval_batch_size: batch size of the inference passes.
    base_learning_rate: peak learning rate.
    schedule: 'cosine', 'piecewise' or 'constant'.
    decay_boundaries: for 'piecewise', fractions of training where the
      learning rate is multiplied by decay_factor, e.g. (0.5, 0.75).
    decay_factor: multiplier at each boundary.
    warmup_epochs: linear warm-up length in epochs.
    momentum: SGD momentum.
    nesterov: Nesterov momentum.
    label_smoothing: label smoothing of the cross-entropy.
    mixed_precision: float16 (GPU) or bfloat16 (CPU) compute, float32 weights.
    jit_compile: XLA-compile the train and predict steps.
    preprocessing: a data.Preprocessing (default: gin-configured one).
    trainable_layers: names of the only layers to train (the ablations);
      the others keep the weights given to `set_base_weights`.
  """

  def __init__(self, dataset, strategy, model_fn=gin.REQUIRED,
               epochs=gin.REQUIRED, batch_size=128, eval_batch_size=1024,
               base_learning_rate=0.1, schedule='cosine', decay_boundaries=(),
               decay_factor=0.1, warmup_epochs=0.0, momentum=0.9,
               nesterov=False, label_smoothing=0.0, mixed_precision=False,
               jit_compile=False, preprocessing=None, trainable_layers=None):
    if epochs < 1 or batch_size < 1:
      raise ValueError('TrialTrainer.epochs and TrialTrainer.batch_size must '
                       'be positive.')
    self.dataset = dataset
    self.strategy = strategy
    self.epochs = int(epochs)
    self.batch_size = int(batch_size)
    self.eval_batch_size = int(eval_batch_size)
    self.pipeline = data_lib.make_pipeline(
        dataset, preprocessing or data_lib.Preprocessing())
    if mixed_precision:
      on_gpu = bool(tf.config.list_logical_devices('GPU'))
      keras.mixed_precision.set_global_policy(
          'mixed_float16' if on_gpu else 'mixed_bfloat16')
    else:
      keras.mixed_precision.set_global_policy('float32')
    with strategy.scope():
      self.model = model_fn(input_shape=self.pipeline.image_shape,
                            num_classes=dataset.num_classes)
      self._frozen = self._freeze_all_but(trainable_layers)
      self._total_steps = tf.Variable(1, trainable=False, dtype=tf.int64,
                                      name='total_steps')
      self.learning_rate = TrialLearningRate(
          base_learning_rate, self._total_steps, schedule, decay_boundaries,
          decay_factor, warmup_fraction=min(1.0, warmup_epochs / epochs))
      optimizer = keras.optimizers.SGD(learning_rate=self.learning_rate,
                                       momentum=momentum, nesterov=nesterov)
      self.model.compile(
          optimizer=optimizer,
          loss=keras.losses.CategoricalCrossentropy(
              from_logits=True, label_smoothing=label_smoothing),
          metrics=['accuracy'], jit_compile=jit_compile)
      self.inference_model = self._build_inference_model()
      self.inference_model.compile(jit_compile=jit_compile)
      self.model.optimizer.build(self.model.trainable_variables)
    self._optimizer_initial = [v.numpy() for v in self.model.optimizer.variables]
    self._reinit_plan = self._make_reinit_plan()
    self._base_values = None
    self._eval_data = {split: self._evaluation_inputs(split)
                       for split in ('train', 'test')}

  def _freeze_all_but(self, trainable_layers):
    """Marks every layer not named in `trainable_layers` frozen; their weights."""
    if trainable_layers is None:
      return []
    names = set(trainable_layers)
    known = {layer.name for layer in self.model.layers}
    if names - known:
      raise ValueError(f'trainable_layers {sorted(names - known)} are not '
                       f'layers of {self.model.name}.')
    frozen = []
    for layer in self.model.layers:
      layer.trainable = layer.name in names
      if not layer.trainable:
        frozen.extend(layer.weights)
    return frozen

  def set_base_weights(self, weights):
    """Weights (as model.get_weights()) the frozen layers keep in every trial."""
    if len(weights) != len(self.model.weights):
      raise ValueError('set_base_weights: the weights do not match the model.')
    values = {id(v): w for v, w in zip(self.model.weights, weights)}
    self._base_values = [values[id(v)] for v in self._frozen]

  def _build_inference_model(self):
    """image, label -> predicted class, true-class probability and margin."""
    image = keras.Input(self.pipeline.image_shape, name='image')
    label = keras.Input((), dtype='int32', name='label')
    logits = keras.ops.cast(self.model(image, training=False), 'float32')
    one_hot = keras.ops.one_hot(label, self.dataset.num_classes)
    prob = keras.ops.sum(keras.ops.softmax(logits) * one_hot, axis=-1)
    true_logit = keras.ops.sum(logits * one_hot, axis=-1)
    other = keras.ops.max(keras.ops.where(one_hot > 0, -np.inf, logits),
                          axis=-1)
    pred = keras.ops.cast(keras.ops.argmax(logits, axis=-1), 'int32')
    return keras.Model([image, label], [pred, prob, true_logit - other],
                       name='inference')

  def _evaluation_inputs(self, split):
    ds = self.pipeline.evaluation(split, self.eval_batch_size)
    return ds.map(lambda x, y: ((x, tf.argmax(y, axis=-1, output_type=tf.int32)),))

  def _make_reinit_plan(self):
    """(variable, initializer) for every weight of the model, in a fixed order."""
    plan, covered = [], set()
    for layer in self.model._flatten_layers():  # pylint: disable=protected-access
      for name in _WEIGHT_ATTRIBUTES:
        variable = getattr(layer, name, None)
        initializer = getattr(layer, f'{name}_initializer', None)
        if (isinstance(variable, keras.Variable) and initializer is not None
            and id(variable) not in covered):
          plan.append((variable, initializer))
          covered.add(id(variable))
    missing = [w.path for w in self.model.weights if id(w) not in covered]
    if missing:
      raise ValueError(
          f'Cannot re-initialise weights {missing[:5]} of model '
          f'{self.model.name}: their layer has no matching `*_initializer`. '
          'Use layers from keras.layers or add the attribute to '
          'training._WEIGHT_ATTRIBUTES.')
    return plan

  def reinitialize(self, seed):
    """Fresh initial weights from `seed`, and the optimizer's initial state."""
    for j, (variable, initializer) in enumerate(self._reinit_plan):
      config = initializer.get_config()
      if 'seed' in config:  # unseeded Keras initializers repeat their values
        config['seed'] = _derived_seed(seed, j)
      fresh = type(initializer).from_config(config)
      variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
    if self._base_values is not None:
      for variable, value in zip(self._frozen, self._base_values):
        variable.assign(value)
    for variable, value in zip(self.model.optimizer.variables,
                               self._optimizer_initial):
      variable.assign(value)

  def _sync_replica_statistics(self):
    """Averages non-trainable weights (BatchNorm moving statistics) over replicas.

    Keras creates them without cross-replica aggregation, so under a
    MirroredStrategy each replica tracks the statistics of its own share of
    every batch. Without this, the inference pass would score each example
    with the statistics of whichever replica it lands on.
    """
    weights = self.model.non_trainable_weights
    if self.strategy.num_replicas_in_sync < 2 or not weights:
      return
    # Each replica reads its own copies; the reduction spans every worker.
    local = self.strategy.run(lambda: [tf.identity(w.value) for w in weights])
    for weight, per_replica in zip(weights, local):
      weight.assign(self.strategy.reduce(tf.distribute.ReduceOp.MEAN,
                                         per_replica, axis=None))

  def steps_per_epoch(self, subset_size):
    return max(1, math.ceil(subset_size / self.batch_size))

  def train_trial(self, mask, seed, callbacks=()):
    """Trains on the examples where `mask` is True; predicts on everything."""
    indices = np.flatnonzero(mask)
    if len(indices) == 0:
      raise ValueError('A trial subset is empty.')
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    self.reinitialize(seed)
    steps_per_epoch = self.steps_per_epoch(len(indices))
    self._total_steps.assign(steps_per_epoch * self.epochs)
    train_ds = self.pipeline.train(indices, self.batch_size, seed)
    setup_s = time.perf_counter() - start
    history = self.model.fit(train_ds, epochs=self.epochs,
                             steps_per_epoch=steps_per_epoch, verbose=0, shuffle=False,
                             callbacks=list(callbacks))
    self._sync_replica_statistics()
    train_s = time.perf_counter() - start - setup_s
    outputs = {}
    for split in ('train', 'test'):
      pred, prob, margin = self.inference_model.predict(
          self._eval_data[split], verbose=0)
      outputs[split] = (pred, prob, margin)
    predict_s = time.perf_counter() - start - setup_s - train_s
    train_correct = outputs['train'][0] == self.dataset.train.labels
    test_correct = outputs['test'][0] == self.dataset.test.labels
    metrics = {
        'train_accuracy': float(train_correct[mask].mean()),
        'heldout_accuracy': (float(train_correct[~mask].mean())
                             if (~mask).any() else float('nan')),
        'test_accuracy': float(test_correct.mean()),
        'final_loss': float(history.history['loss'][-1]),
        'subset_size': int(len(indices)),
        'setup_seconds': setup_s,
        'train_seconds': train_s,
        'predict_seconds': predict_s,
    }
    return TrialResult(
        train_pred=outputs['train'][0], train_prob=outputs['train'][1],
        train_margin=outputs['train'][2], test_pred=outputs['test'][0],
        test_prob=outputs['test'][1], test_margin=outputs['test'][2],
        metrics=metrics)
