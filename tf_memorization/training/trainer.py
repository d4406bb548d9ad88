"""Train one trial under a tf.distribute strategy and predict on everything.

`TrialTrainer` builds the model, optimizer and compiled Keras functions once per
process. Each trial then re-initialises every weight from the trial's seed,
restores the optimizer's initial state, trains on the trial's subset and runs
one inference pass over the full train and test sets. No model is rebuilt and
no function is retraced between trials of the same config: for small models
set-up would otherwise dominate the trial.
"""

import inspect
import math
import time

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import storage
from tf_memorization.data import pipelines as data_lib
from tf_memorization.training import dynamics as dynamics_lib
from tf_memorization.training import inference
from tf_memorization.training import initializing
from tf_memorization.training import models as models_lib
from tf_memorization.training import schedules
from tf_memorization.training import strategy as strategy_lib

TrialResult = inference.TrialResult  # what train_trials returns


def _takes_indices(pipeline):
  try:
    return 'with_indices' in inspect.signature(pipeline.train).parameters
  except (TypeError, ValueError):
    return False


def checkpoint_epoch(path):
  """Epochs done in a trial's checkpoint (0 without one); reads one entry."""
  if not tf.io.gfile.exists(path):
    return 0
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      with np.load(f, allow_pickle=False) as stored:
        return int(stored['epoch'])
  except (OSError, ValueError, KeyError):
    return 0


@gin.configurable
class TrialTrainer:
  """Trains trials of one config; see the module docstring.

  With `models_per_step` = K > 1 the trainer holds K copies of the model and
  trains K trials in one compiled step, each copy on its own subset's batch:
  a small model that cannot fill the machine alone shares the per-step cost
  with K-1 others. Each copy is its own subgraph with its own weights and
  optimizer slots, and the summed loss gives each copy exactly its own
  gradient, so a trial computes the same whichever group it trains in. The
  K trials of one step share the learning-rate schedule, so a group holds
  trials with the same number of steps (`total_steps`); runs.train_jobs
  groups them.

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
    mixed_precision: float16 (GPU, with loss scaling) or bfloat16 (CPU)
      compute, float32 weights.
    jit_compile: XLA-compile the train and predict steps.
    preprocessing: a data.Preprocessing (default: gin-configured one).
    trainable_layers: the only layers to train (the ablations): indices
      among model.layers (they hold for every build of `model_fn`) or
      names, looked up in the trainer's first model (models.layer_indices);
      the others keep the weights given to `set_base_weights`.
    pretrained_layers: layers (as trainable_layers) whose weights, as
      `model_fn` built them, every trial starts from (the others are
      re-initialised from the trial's seed); added to those the builder
      declared with models.mark_pretrained (models.pretrained declares its
      backbone).
    models_per_step: K, the trials trained together in one compiled step.
    in_graph_input: build each batch inside the compiled step (gather from
      the in-memory images, augment) instead of in a tf.data pipeline: the
      same batches without input threads competing with the model for the
      CPU. 'auto': whenever the dataset is held in memory and the batch
      splits evenly over the replicas.
    checkpoint_seconds: write each trial's state (weights, optimizer slots,
      epochs done) to the path `train_trials` is given, after an epoch that
      ends at least this long after the last checkpoint; a killed run resumes
      from it. 0: after every epoch; None: never.
    deterministic_ops: tf.config.experimental.enable_op_determinism(), for
      bit-for-bit reruns on GPUs (CPU kernels here are deterministic).
    record_dynamics: accumulate the learning-dynamics proxies of every
      subset example in the compiled step (dynamics.py) for the records.
      Needs a pipeline whose `train` takes `with_indices` (all of this
      package's do).
    record_heldout_probs: also return every held-out training example's
      class-probability vector (float16 [n − m, C] per record: opt-in, as
      at C = 1,000 it is most of a record), for label-issue tools.
  """

  def __init__(self, dataset, strategy, model_fn=gin.REQUIRED,
               epochs=gin.REQUIRED, batch_size=128, eval_batch_size=1024,
               base_learning_rate=0.1, schedule='cosine', decay_boundaries=(),
               decay_factor=0.1, warmup_epochs=0.0, momentum=0.9,
               nesterov=False, label_smoothing=0.0, mixed_precision=False,
               jit_compile=False, preprocessing=None, trainable_layers=None,
               models_per_step=1, in_graph_input='auto',
               checkpoint_seconds=600.0, deterministic_ops=False,
               pretrained_layers=(), record_dynamics=True,
               record_heldout_probs=False):
    name = 'TrialTrainer.'
    epochs = errors.integer(name + 'epochs', epochs, minimum=1)
    batch_size = errors.integer(name + 'batch_size', batch_size, minimum=1)
    eval_batch_size = errors.integer(name + 'eval_batch_size',
                                     eval_batch_size, minimum=1)
    base_learning_rate = errors.number(name + 'base_learning_rate',
                                       base_learning_rate, above=0)
    errors.choice(name + 'schedule', schedule, schedules.SCHEDULES)
    decay_boundaries = errors.sequence(
        name + 'decay_boundaries', decay_boundaries,
        lambda n, v: errors.number(n, v, minimum=0, maximum=1))
    decay_factor = errors.number(name + 'decay_factor', decay_factor, above=0)
    warmup_epochs = errors.number(name + 'warmup_epochs', warmup_epochs,
                                  minimum=0)
    momentum = errors.number(name + 'momentum', momentum, minimum=0, below=1)
    errors.boolean(name + 'nesterov', nesterov)
    label_smoothing = errors.number(name + 'label_smoothing', label_smoothing,
                                    minimum=0, below=1)
    errors.boolean(name + 'mixed_precision', mixed_precision)
    errors.boolean(name + 'jit_compile', jit_compile)
    if trainable_layers is not None:
      trainable_layers = errors.sequence(name + 'trainable_layers',
                                         trainable_layers,
                                         models_lib.layer_reference)
    models_per_step = errors.integer(name + 'models_per_step',
                                     models_per_step, minimum=1)
    pretrained_layers = errors.sequence(name + 'pretrained_layers',
                                        pretrained_layers,
                                        models_lib.layer_reference)
    if in_graph_input != 'auto':
      errors.boolean(name + 'in_graph_input', in_graph_input)
    checkpoint_seconds = errors.number(name + 'checkpoint_seconds',
                                       checkpoint_seconds, minimum=0,
                                       allow_none=True)
    errors.boolean(name + 'deterministic_ops', deterministic_ops)
    errors.boolean(name + 'record_dynamics', record_dynamics)
    errors.boolean(name + 'record_heldout_probs', record_heldout_probs)
    if not callable(model_fn):
      raise errors.ConfigError(f'{name}model_fn must be a model builder '
                               f'such as @small_resnet, got {model_fn!r}.')
    self.dataset = dataset
    self.strategy = strategy
    self.epochs = epochs
    self.batch_size = batch_size
    self.eval_batch_size = eval_batch_size
    self.momentum = momentum
    self.models_per_step = models_per_step
    self.pipeline = data_lib.make_pipeline(
        dataset, preprocessing or data_lib.Preprocessing())
    possible = (isinstance(self.pipeline, data_lib.InMemoryPipeline) and
                self.batch_size % strategy.num_replicas_in_sync == 0)
    if in_graph_input == 'auto':
      in_graph_input = possible
    elif in_graph_input and not possible:
      raise ValueError(
          'TrialTrainer.in_graph_input = True needs a dataset held in memory '
          'and a batch_size divisible by the number of replicas '
          f'({strategy.num_replicas_in_sync}).')
    self.in_graph_input = bool(in_graph_input)
    self.record_heldout_probs = bool(record_heldout_probs)
    if record_dynamics and not self.in_graph_input and not _takes_indices(
        self.pipeline):
      raise errors.ConfigError(
          f'{type(self.pipeline).__name__}.train takes no with_indices '
          'argument, so the learning-dynamics proxies cannot be recorded: '
          'give its train() a with_indices flag that adds each batch\'s '
          'example indices, or bind TrialTrainer.record_dynamics = False.')
    # Outside the strategy's scope: updated from the whole global batch.
    self.dynamics = (dynamics_lib.LearningDynamics(models_per_step,
                                                   len(dataset.train))
                     if record_dynamics else None)
    self.checkpoint_seconds = (None if checkpoint_seconds is None
                               else float(checkpoint_seconds))
    if deterministic_ops:
      tf.config.experimental.enable_op_determinism()
    # Only the chief writes checkpoints; every worker reads them.
    self._chief = strategy_lib.is_chief(strategy)
    self._sync_function = None
    policy = 'float32'
    if mixed_precision:
      on_gpu = bool(tf.config.list_logical_devices('GPU'))
      policy = 'mixed_float16' if on_gpu else 'mixed_bfloat16'
    keras.mixed_precision.set_global_policy(policy)
    with strategy.scope():
      self.models = [models_lib.build(model_fn, self.pipeline.image_shape,
                                      dataset.num_classes, name + 'model_fn')
                     for _ in range(self.models_per_step)]
      self.model = self.models[0]
      for k, model in enumerate(self.models[1:], start=1):
        model.name = f'{model.name}_copy{k}'  # unique within the packed graph
      # By position: the copies' unnamed layers have other names.
      if trainable_layers is not None:
        trainable_layers = models_lib.layer_indices(
            self.model, trainable_layers, name + 'trainable_layers')
      pretrained_layers = models_lib.layer_indices(
          self.model, pretrained_layers, name + 'pretrained_layers')
      self._frozen = [initializing.freeze_all_but(m, trainable_layers)
                      for m in self.models]
      self._pretrained = [initializing.pretrained_values(m, pretrained_layers)
                          for m in self.models]
      self.pretrained_digests = sorted(set(
          models_lib.pretrained_layers(self.model)[1]))
      self._trainable = [v for m in self.models
                         for v in m.trainable_variables]
      self._total_steps = tf.Variable(1, trainable=False, dtype=tf.int64,
                                      name='total_steps')
      self.learning_rate = schedules.TrialLearningRate(
          base_learning_rate, self._total_steps, schedule, decay_boundaries,
          decay_factor, warmup_fraction=min(1.0, warmup_epochs / epochs))
      self.optimizer = keras.optimizers.SGD(
          learning_rate=self.learning_rate, momentum=momentum,
          nesterov=nesterov)
      if policy == 'mixed_float16':
        self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
      self.optimizer.build(self._trainable)
      self.loss = keras.losses.CategoricalCrossentropy(
          from_logits=True, label_smoothing=label_smoothing)
      self.inference_model = inference.build_model(
          self.models, self.pipeline.image_shape, dataset.num_classes,
          self.record_heldout_probs)
      self.inference_model.compile(jit_compile=jit_compile)
    self._optimizer_initial = [v.numpy() for v in self.optimizer.variables]
    self._reinit_plans = [
        initializing.reinit_plan(m, {id(v) for v, _ in pretrained})
        for m, pretrained in zip(self.models, self._pretrained)]
    self._base_values = None
    self._eval_data = {split: self._evaluation_inputs(split)
                       for split in ('train', 'test')}
    self._replica_step = tf.function(self._replica_step_fn,
                                     jit_compile=bool(jit_compile),
                                     reduce_retracing=True)
    self._train_steps = tf.function(self._train_steps_fn,
                                    reduce_retracing=True)
    self._in_graph_step = tf.function(self._in_graph_replica_step,
                                      jit_compile=bool(jit_compile),
                                      reduce_retracing=True)
    self._train_steps_in_graph = tf.function(self._train_steps_in_graph_fn,
                                             reduce_retracing=True)

  def set_base_weights(self, weights):
    """Weights (as model.get_weights()) the frozen layers keep in every trial."""
    if len(weights) != len(self.model.weights):
      raise ValueError('set_base_weights: the weights do not match the model.')
    self._base_values = []
    for model, frozen in zip(self.models, self._frozen):
      values = {id(v): w for v, w in zip(model.weights, weights)}
      self._base_values.append([values[id(v)] for v in frozen])

  def _evaluation_inputs(self, split):
    ds = self.pipeline.evaluation(split, self.eval_batch_size)
    return ds.map(lambda x, y: ((x, tf.argmax(y, axis=-1, output_type=tf.int32)),))

  def reinitialize(self, seeds):
    """Fresh initial weights of copy k from seeds[k]; optimizer reset.

    `seeds` is one seed (for every copy) or one per copy. Copy k's weights
    depend on seeds[k] alone, not on k.
    """
    if np.ndim(seeds) == 0:
      seeds = [seeds] * self.models_per_step
    for k, seed in enumerate(seeds):
      initializing.assign_fresh(self._reinit_plans[k], seed)
      for variable, value in self._pretrained[k]:
        variable.assign(value)
      if self._base_values is not None:
        for variable, value in zip(self._frozen[k], self._base_values[k]):
          variable.assign(value)
    for variable, value in zip(self.optimizer.variables,
                               self._optimizer_initial):
      variable.assign(value)

  def _replica_step_fn(self, batches):
    """One SGD step of every copy on its own batch; each copy's loss.

    With record_dynamics also each example's loss and correctness ([B, K],
    this replica's rows) and, when the batches carry them, its indices.
    """
    replicas = self.strategy.num_replicas_in_sync
    example_losses, example_correct, example_indices = [], [], []
    with tf.GradientTape() as tape:
      losses = []
      for model, batch in zip(self.models, batches):
        images, labels = batch[0], batch[1]
        if len(batch) > 2:
          example_indices.append(batch[2])
        logits = model(images, training=True)
        if self.dynamics is not None:
          exact = tf.cast(logits, tf.float32)
          example_losses.append(tf.nn.softmax_cross_entropy_with_logits(
              tf.cast(labels, tf.float32), exact))
          example_correct.append(tf.cast(  # int32: gather takes no bool
              tf.equal(tf.argmax(exact, axis=-1), tf.argmax(labels, axis=-1)),
              tf.int32))
        # The loss object divides by the replica count under a strategy,
        # so that the gradients summed over replicas are the global mean's.
        loss = self.loss(labels, logits)
        if model.losses:
          loss += tf.add_n(model.losses) / replicas
        losses.append(loss)
      scaled = self.optimizer.scale_loss(tf.add_n(losses))
    gradients = tape.gradient(scaled, self._trainable)
    self.optimizer.apply_gradients(zip(gradients, self._trainable))
    losses = tf.stack(losses) * replicas
    if self.dynamics is None:
      return losses
    return (losses, tf.stack(example_losses, axis=1),
            tf.stack(example_correct, axis=1),
            tf.stack(example_indices, axis=1) if example_indices else ())

  def _mean_losses(self, steps, run_step, rows=None):
    """Runs `run_step(s)` (per-replica losses) for s < steps; mean losses.

    With record_dynamics, each step's per-example losses and correctness
    are gathered from the replicas, with the example indices (`rows(s)`,
    [K, B], the in-graph input's, or those the batches carry), and the
    call's visits are accumulated once at its end, in stream order: one
    scatter per call (an epoch), not one per step.
    """
    total = tf.zeros([self.models_per_step], tf.float32)
    if self.dynamics is None:
      for s in tf.range(steps):
        total += self.strategy.reduce(tf.distribute.ReduceOp.MEAN,
                                      run_step(s), axis=None)
      return total / tf.cast(steps, tf.float32)
    gather = lambda value: self.strategy.gather(value, axis=0)
    size = tf.cast(steps, tf.int32)
    seen = tf.TensorArray(tf.int32, size=size)
    losses = tf.TensorArray(tf.float32, size=size)
    correct = tf.TensorArray(tf.int32, size=size)
    for s in tf.range(steps):
      out, example_losses, example_correct, indices = run_step(s)
      indices = (tf.transpose(rows(s)) if rows is not None
                 else gather(indices))
      at = tf.cast(s, tf.int32)
      seen = seen.write(at, tf.cast(indices, tf.int32))
      losses = losses.write(at, gather(example_losses))
      correct = correct.write(at, gather(example_correct))
      total += self.strategy.reduce(tf.distribute.ReduceOp.MEAN, out,
                                    axis=None)
    self.dynamics.update(seen.concat(), losses.concat(), correct.concat())
    return total / tf.cast(steps, tf.float32)

  def _train_steps_fn(self, iterator, steps):
    """`steps` steps from `iterator` in one call; each copy's mean loss."""
    return self._mean_losses(steps, lambda _: self.strategy.run(
        self._replica_step, args=(next(iterator),)))

  def _in_graph_replica_step(self, rows, keys, step):
    """Builds batch `step` of every copy from its index row, then steps.

    Each replica builds the whole global batch and keeps its share, the
    rows a tf.distribute'd dataset would have given it.
    """
    replicas = self.strategy.num_replicas_in_sync
    share = self.batch_size // replicas
    batches = []
    for k in range(self.models_per_step):
      images, labels = self.pipeline.train_batch(rows[k],
                                                 tf.stack([keys[k], step]))
      if replicas > 1:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        begin = replica * share
        images = images[begin:begin + share]
        labels = labels[begin:begin + share]
      batches.append((images, labels))
    return self._replica_step_fn(batches)

  def _train_steps_in_graph_fn(self, block, keys, first_step):
    """The steps of `block` ([steps, K, batch] indices); mean losses."""
    return self._mean_losses(tf.shape(block)[0], lambda s: self.strategy.run(
        self._in_graph_step,
        args=(block[s], keys, first_step + tf.cast(s, tf.int64))),
                             rows=lambda s: block[s])

  def _sync_replica_statistics(self):
    """Averages non-trainable weights (BatchNorm moving statistics) over replicas.

    Keras creates them without cross-replica aggregation, so under a
    MirroredStrategy each replica tracks the statistics of its own share of
    every batch. Without this, the inference pass would score each example
    with the statistics of whichever replica it lands on.
    """
    weights = [w for m in self.models for w in m.non_trainable_weights]
    if self.strategy.num_replicas_in_sync < 2 or not weights:
      return
    if self._sync_function is None:
      def sync():
        # Each replica reads its own copies; the reduction spans every worker.
        local = self.strategy.run(
            lambda: [tf.identity(w.value) for w in weights])
        for weight, per_replica in zip(weights, local):
          weight.assign(self.strategy.reduce(tf.distribute.ReduceOp.MEAN,
                                             per_replica, axis=None))
      self._sync_function = tf.function(sync)  # compiled once, not eager
    self._sync_function()

  def _slot_momentums(self, k):
    """Copy k's optimizer slot variables (SGD momentums), in weight order."""
    optimizer = getattr(self.optimizer, 'inner_optimizer', self.optimizer)
    momentums = list(getattr(optimizer, 'momentums', None) or [])
    if not momentums:
      return []
    counts = [len(m.trainable_variables) for m in self.models]
    start = sum(counts[:k])
    return momentums[start:start + counts[k]]

  def _shared_optimizer_variables(self):
    """Optimizer variables not tied to one weight (iterations, loss scale)."""
    slots = {id(v) for k in range(self.models_per_step)
             for v in self._slot_momentums(k)}
    return [v for v in self.optimizer.variables if id(v) not in slots]

  def _write_checkpoint(self, path, k, seed, mask, epoch, tag):
    arrays = {'epoch': np.int64(epoch), 'seed': np.int64(seed),
              'mask': np.packbits(np.asarray(mask, bool)),
              'tag': np.array(str(tag))}
    arrays.update({f'w{i}': np.asarray(w.numpy())
                   for i, w in enumerate(self.models[k].weights)})
    arrays.update({f'm{i}': np.asarray(v.numpy())
                   for i, v in enumerate(self._slot_momentums(k))})
    arrays.update({f'o{i}': np.asarray(v.numpy())
                   for i, v in enumerate(self._shared_optimizer_variables())})
    if self.dynamics is not None:
      arrays.update({f'd_{name}': value for name, value in
                     self.dynamics.state(k).items()})
    storage.atomic_replace(path, storage.npz_bytes(arrays))

  def read_checkpoint(self, path, seed, mask, tag=''):
    """A trial's checkpoint as arrays, or None when absent or not its own.

    Its own: the same seed, mask and `tag` (the config fingerprint of the
    run that wrote it), so a checkpoint of another config is never resumed.
    """
    if not path or not tf.io.gfile.exists(path):
      return None
    try:
      state = storage.load_npz(path)
      same = (int(state['epoch']) < self.epochs and int(state['seed']) == seed
              and str(state['tag']) == str(tag)
              and np.array_equal(state['mask'],
                                 np.packbits(np.asarray(mask, bool))))
      weights = self.models[0].weights
      same = same and all(state[f'w{i}'].shape == tuple(w.shape)
                          for i, w in enumerate(weights))
      if self.dynamics is not None:  # a checkpoint without them restarts
        same = same and all(
            state[f'd_{name}'].shape == (self.dynamics.num_train,)
            for name in self.dynamics.variables)
    except (KeyError, ValueError, OSError, errors.RecordError):
      same = False
    return state if same else None

  def _restore(self, k, state):
    for i, w in enumerate(self.models[k].weights):
      w.assign(state[f'w{i}'])
    for i, v in enumerate(self._slot_momentums(k)):
      v.assign(state[f'm{i}'])
    for i, v in enumerate(self._shared_optimizer_variables()):
      v.assign(state[f'o{i}'])
    if self.dynamics is not None:
      self.dynamics.restore(k, {name: state[f'd_{name}']
                                for name in self.dynamics.variables})

  def steps_per_epoch(self, subset_size):
    return max(1, math.ceil(subset_size / self.batch_size))

  def total_steps(self, mask):
    """SGD steps of a trial on `mask`; trials train together when equal."""
    return self.steps_per_epoch(int(np.count_nonzero(mask))) * self.epochs

  def train_trial(self, mask, seed):
    """Trains on the examples where `mask` is True; predicts on everything."""
    return self.train_trials([mask], [seed])[0]

  def train_trials(self, masks, seeds, checkpoints=None, checkpoint_tag=''):
    """Trains up to `models_per_step` trials together; a TrialResult each.

    The trials must have the same `total_steps`. Fewer than K trials are
    padded with copies of the last one, whose results are dropped. With
    `checkpoints` (a path per trial) the trials resume from their
    checkpoints when all of them hold one of the same epoch, and write them
    as `checkpoint_seconds` says; the caller deletes them once the records
    are written. A checkpoint resumes only trials of its `checkpoint_tag`
    (the caller's config fingerprint).
    """
    count = len(masks)
    if not 1 <= count <= self.models_per_step or len(seeds) != count:
      raise ValueError(f'train_trials takes 1 to {self.models_per_step} '
                       f'masks and as many seeds, got {count} and '
                       f'{len(seeds)}.')
    indices = [np.flatnonzero(mask) for mask in masks]
    if any(len(i) == 0 for i in indices):
      raise ValueError('A trial subset is empty.')
    steps_per_epoch = {self.steps_per_epoch(len(i)) for i in indices}
    if len(steps_per_epoch) != 1:
      raise ValueError('Trials trained together need the same number of '
                       f'steps per epoch, got {sorted(steps_per_epoch)}.')
    steps_per_epoch = steps_per_epoch.pop()
    pad = self.models_per_step - count
    indices += [indices[-1]] * pad
    seeds = [int(s) for s in seeds] + [int(seeds[-1])] * pad
    start = time.perf_counter()
    # The in-memory pipeline is stateless; the streaming one's shuffle buffer
    # combines its trial seed with TF's global seed, fixed here so that a
    # trial does not depend on the group it trains in.
    tf.random.set_seed(0)
    self.reinitialize(seeds)
    if self.dynamics is not None:
      self.dynamics.reset()
    total_steps = steps_per_epoch * self.epochs
    self._total_steps.assign(total_steps)
    start_epoch = 0
    if checkpoints:
      states = [self.read_checkpoint(p, s, m, checkpoint_tag)
                for p, s, m in zip(checkpoints, seeds, masks)]
      epochs = {None if st is None else int(st['epoch']) for st in states}
      if len(epochs) == 1 and None not in epochs:
        start_epoch = epochs.pop()
        for k in range(self.models_per_step):
          self._restore(k, states[min(k, count - 1)])
    if self.in_graph_input:
      block = tf.stack([self.pipeline.index_stream(i, s, total_steps,
                                                   self.batch_size)
                        for i, s in zip(indices, seeds)], axis=1)
      keys = tf.stack([self.pipeline.augment_key(s) for s in seeds])
    else:
      extra = {'with_indices': True} if self.dynamics is not None else {}
      stream = tf.data.Dataset.zip(tuple(
          self.pipeline.train(i, self.batch_size, s, **extra)
          for i, s in zip(indices, seeds))).skip(start_epoch * steps_per_epoch)
      iterator = iter(self.strategy.experimental_distribute_dataset(stream))
      steps = tf.constant(steps_per_epoch, tf.int64)
    setup_s = time.perf_counter() - start
    last_checkpoint = time.perf_counter()
    for epoch in range(start_epoch, self.epochs):
      if self.in_graph_input:
        first = epoch * steps_per_epoch
        losses = self._train_steps_in_graph(
            block[first:first + steps_per_epoch], keys,
            tf.constant(first, tf.int64))
      else:
        losses = self._train_steps(iterator, steps)
      # Every epoch, so that a resumed trial computes what an uninterrupted
      # one does (a no-op on one replica).
      self._sync_replica_statistics()
      if (checkpoints and self._chief and self.checkpoint_seconds is not None
          and epoch + 1 < self.epochs and time.perf_counter()
          - last_checkpoint >= self.checkpoint_seconds):
        for k, path in enumerate(checkpoints):
          self._write_checkpoint(path, k, seeds[k], masks[k], epoch + 1,
                                 checkpoint_tag)
        last_checkpoint = time.perf_counter()
    losses = losses.numpy()
    train_s = time.perf_counter() - start - setup_s
    outputs = self.inference_model.predict(self._eval_data['train'],
                                           verbose=0)
    test_outputs = self.inference_model.predict(self._eval_data['test'],
                                                verbose=0)
    predict_s = time.perf_counter() - start - setup_s - train_s
    return [inference.trial_result(
        outputs, test_outputs, k, np.asarray(masks[k], bool),
        self.dataset, metrics=dict(
            final_loss=float(losses[k]), subset_size=int(len(indices[k])),
            trained_together=count, resumed_from_epoch=start_epoch,
            # The group's times, shared among its trials.
            setup_seconds=setup_s / count, train_seconds=train_s / count,
            predict_seconds=predict_s / count),
        heldout_probs=self.record_heldout_probs,
        dynamics=(self.dynamics.values(k, masks[k])
                  if self.dynamics is not None else None))
            for k in range(count)]
