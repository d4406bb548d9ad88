"""The last-layer (last-N-blocks) ablation: is memorization in the
representation?

A reference model trains on the full training set; then models with the
main run's subset masks retrain only the top of the network (the linear
head, or the last N residual blocks and the head) with everything below
frozen at the reference weights, and the same scores are computed from
them. N = 0 trains all the linear heads at once on the reference model's
features (`train_linear_heads`). Writes ablation.csv / .json and
ablation_histogram.png.
"""

import dataclasses
import os

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import storage
from tf_memorization.experiments import base
from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import scores
from tf_memorization.training import models
from tf_memorization.training import runs
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import estimates
from tf_memorization.workdir import records


def _positions(model, references, binding):
  try:
    return models.layer_indices(model, references, binding)
  except errors.ConfigError as e:
    raise errors.UserError(str(e)) from e


def head_index(model, head_layer=None):
  """Position in model.layers of the model's head: `head_layer` (a name or
  an index), else its layer named 'logits' (every models.py builder's),
  else its last top-level layer holding weights."""
  if head_layer is not None:
    return _positions(model, [head_layer], 'AblationExperiment.head_layer')[0]
  names = [layer.name for layer in model.layers]
  if 'logits' in names:
    return names.index('logits')
  weighted = [i for i, layer in enumerate(model.layers) if layer.weights]
  if not weighted:
    raise errors.UserError(f'{model.name} has no layer with weights.')
  return weighted[-1]


def blocks(model, block_layers=None, head_layer=None):
  """The model's blocks, input to output: each a list of positions in
  model.layers.

  * models.py ResNets: the residual blocks (layers named stageS_blockB_*);
  * block_layers given (names or indices): each of those top-level layers
    is one block;
  * any other model: each top-level layer holding weights, except the head
    (a nested model, e.g. a pretrained backbone, is one block).
  """
  names = [layer.name for layer in model.layers]
  head = head_index(model, head_layer)
  if block_layers is not None:
    chosen = _positions(model, block_layers, 'AblationExperiment.block_layers')
    if head in chosen:
      raise errors.UserError(
          f'AblationExperiment.block_layers holds the head {names[head]!r}: '
          'list only the layers below it (the head always trains).')
    return [[index] for index in chosen]
  prefixes = []
  for name in names:
    parts = name.split('_')
    if len(parts) > 2 and parts[0].startswith('stage') and parts[1].startswith(
        'block'):
      prefix = f'{parts[0]}_{parts[1]}'
      if prefix not in prefixes:
        prefixes.append(prefix)
  if prefixes:
    return [[i for i, name in enumerate(names) if name.startswith(prefix + '_')]
            for prefix in prefixes]
  return [[i] for i, layer in enumerate(model.layers)
          if layer.weights and i != head]


def trainable_indices(model, num_blocks, block_layers=None, head_layer=None):
  """Positions in model.layers of the layers trained when only the last
  `num_blocks` blocks + head train. Positions, not names, go to the
  ablation's trainer: it builds the model again, and layers built without
  a name are named anew by every build."""
  found = blocks(model, block_layers, head_layer)
  if num_blocks > len(found):
    raise errors.UserError(
        f'AblationExperiment.trainable_blocks asks for {num_blocks} blocks but '
        f'{model.name} has {len(found)} '
        f'({[model.layers[b[0]].name for b in found]}); see '
        'AblationExperiment.block_layers.')
  chosen = found[len(found) - num_blocks:] if num_blocks else []
  keep = {index for block in chosen for index in block}
  keep.add(head_index(model, head_layer))
  return sorted(keep)


@base.register('ablation')
@gin.configurable
class AblationExperiment(base.Experiment):
  """Is memorization in the representation? Retrain only the top of the net.

  A reference model is trained on the full training set; then, for each N in
  `trainable_blocks`, k models (one per subset mask of the full-network
  trials) train only the last N blocks and the head (N = 0: the last layer
  only, the paper's experiment) from a fresh initialisation, with everything
  below frozen at the reference weights. The same scores are computed from
  their predictions.

  Blocks (`blocks`): a models.py ResNet's residual blocks; for any other
  model, its top-level layers holding weights below the head (a nested
  pretrained backbone is one block), or the layers `block_layers` names.
  The head is the layer named 'logits', else the last layer with weights,
  or `head_layer`. Layers are found in the trials' model as the estimator
  builds it, and handed to the ablation's trainers by their positions in
  model.layers, which every build of the model function shares.

  Args:
    trainable_blocks: the N values.
    max_trials: use only the first this many subset masks (None: all k).
    batched_heads: for N = 0, train all the linear heads at once on the
      reference model's penultimate features (computed once, without
      augmentation) instead of one frozen network per trial.
    heads_per_group: heads trained together (bounds memory:
      heads x features x classes floats).
    block_layers: for a model of your own, its top-level layers that
      count as blocks, input to output (default: see above): each a
      layer's name or its index among model.layers (a functional model's
      input layer is 0, a Sequential's first layer is 0; negative: from
      the end). A name matches a layer the builder named; a layer built
      without a name gets one by the order of builds in the process (dense,
      dense_1, ...), so give such layers by index.
    head_layer: the model's head, a name or an index as in block_layers,
      e.g. -1 for the last layer (default: see above); with batched_heads
      it must be a Dense layer on a feature vector.
  """

  def __init__(self, trainable_blocks=(0,), max_trials=None,
               batched_heads=True, heads_per_group=256, block_layers=None,
               head_layer=None):
    name = 'AblationExperiment.'
    self.trainable_blocks = errors.sequence(
        name + 'trainable_blocks', trainable_blocks,
        lambda n, v: errors.integer(n, v, minimum=0))
    self.max_trials = errors.integer(name + 'max_trials', max_trials,
                                     minimum=2, allow_none=True)
    self.batched_heads = errors.boolean(name + 'batched_heads', batched_heads)
    self.heads_per_group = errors.integer(name + 'heads_per_group',
                                          heads_per_group, minimum=1)
    if block_layers is not None:
      block_layers = errors.sequence(name + 'block_layers', block_layers,
                                     models.layer_reference)
    self.block_layers = block_layers
    if head_layer is not None:
      head_layer = models.layer_reference(name + 'head_layer', head_layer)
    self.head_layer = head_layer

  def _reference_weights(self, workdir, setup, log):
    directory = base.experiment_dir(workdir, 'ablation_reference')
    path = os.path.join(directory, 'reference.weights.npz')
    if tf.io.gfile.exists(path):
      stored = storage.load_npz(path)
      return [stored[f'w{i}'] for i in range(len(stored))]
    n = len(setup.dataset.train)
    job = runs.Job(0, np.ones(n, bool),
                   base.seed_of(setup.design.seed, 'ablation_reference', 0),
                   {'role': 'reference'})
    base.prepare(workdir, 'ablation_reference', setup, [job])
    log('Ablation: training the reference model on the full training set.')
    setup.trainer.train_trial(job.mask, job.seed)
    weights = setup.trainer.model.get_weights()
    storage.atomic_write(path, storage.npz_bytes(
        {f'w{i}': w for i, w in enumerate(weights)}))
    return weights

  def run(self, inputs):
    workdir, output_dir, setup, log = (inputs.workdir, inputs.output_dir,
                                       inputs.setup, inputs.log)
    main, main_mem, main_infl = (inputs.records, inputs.memorization,
                                 inputs.influence)
    reference = self._reference_weights(workdir, setup, log)
    k = main.num_trials if self.max_trials is None else min(
        self.max_trials, main.num_trials)
    rows, summary = [], {'variants': []}
    if k < main.num_trials:  # compare like with like: the same k trials
      main_mem = scores.memorization(main.masks[:k], main.train_correct[:k])
      main_infl = inputs.influence_of(main, main_mem.memorization,
                                      rows=slice(0, k), topk=0)
    full = {'variant': 'full network', 'trainable_blocks': None,
            'mean_test_accuracy': float(main.test_correct[:k].mean()),
            'memorized_025': int(np.nansum(main_mem.memorization >= 0.25)),
            'num_pairs': int(len(main_infl.pair_train))}
    variants = [(full, main_mem.memorization)]
    for num_blocks in self.trainable_blocks:
      name = f'ablation_last{num_blocks}'
      layers = trainable_indices(setup.trainer.model, num_blocks,
                                 self.block_layers, self.head_layer)
      sub = dataclasses.replace(
          setup, trainer=inputs.new_trainer(trainable_layers=layers))
      sub.trainer.set_base_weights(reference)
      jobs = [runs.Job(int(t), main.masks[row],
                       base.seed_of(setup.design.seed, name, int(t)),
                       {'trainable_blocks': num_blocks})
              for row, t in enumerate(main.trial_indices[:k])]
      if num_blocks == 0 and self.batched_heads:
        sub.trainer.model.set_weights(reference)
        loaded = self._batched_heads(
            workdir, name, sub, jobs, log,
            head_index(setup.trainer.model, self.head_layer))
      else:
        loaded = base.run_jobs(workdir, name, sub, jobs, log)
      mem = scores.memorization(loaded.masks, loaded.train_correct,
                                loaded.train_prob)
      infl = inputs.influence_of(loaded, mem.memorization, topk=0)
      entry = {'variant': ('last layer only' if num_blocks == 0 else
                           f'last {num_blocks} blocks + head'),
               'trainable_blocks': num_blocks,
               'mean_test_accuracy': float(loaded.test_correct.mean()),
               'memorized_025': int(np.nansum(mem.memorization >= 0.25)),
               'num_pairs': int(len(infl.pair_train))}
      variants.append((entry, mem.memorization))
    header = ['variant', 'trainable_blocks', 'mean_test_accuracy',
              'examples_memorization_ge_0.25', 'high_influence_pairs']
    for entry, _ in variants:
      rows.append([entry['variant'], '' if entry['trainable_blocks'] is None
                   else entry['trainable_blocks'],
                   entry['mean_test_accuracy'], entry['memorized_025'],
                   entry['num_pairs']])
      summary['variants'].append(entry)
    summary['trials_used'] = k
    estimates.write_table(output_dir, self.kind, header, rows, summary)
    self._plot(output_dir, variants)
    log('Ablation (mean test accuracy, examples with mem >= 0.25, pairs):\n' +
        '\n'.join(f'  {e["variant"]}: {e["mean_test_accuracy"]:.4f}, '
                  f'{e["memorized_025"]}, {e["num_pairs"]}'
                  for e, _ in variants))
    return summary

  def _batched_heads(self, workdir, name, setup, jobs, log, head):
    """Trains the jobs' linear heads together; writes one record per job.
    `head`: the head's index among model.layers."""
    directory = base.prepare(workdir, name, setup, jobs)
    found = records.list_records(directory)
    pending = [job for job in jobs if job.index not in found]
    if pending:
      trainer = setup.trainer
      features = keras_features(trainer, head)
      log(f'Ablation: training {len(pending)} linear heads at once on '
          f'{features["train"].shape[1]}-dimensional features.')
      for start in range(0, len(pending), self.heads_per_group):
        group = pending[start:start + self.heads_per_group]
        outputs = train_linear_heads(
            features, setup.dataset.train.labels, setup.dataset.test.labels,
            np.stack([job.mask for job in group]),
            [job.seed for job in group], setup.dataset.num_classes,
            epochs=trainer.epochs, batch_size=trainer.batch_size,
            learning_rate=trainer.learning_rate.base_learning_rate,
            momentum=trainer.momentum,
            weight_decay=_l2_of(trainer.model.layers[head]),
            # The first planned job's: a resumed run's heads train in
            # other groups than the first run's, on the same batches.
            order_seed=jobs[0].seed)
        for job, result in zip(group, outputs):
          records.write_record(directory, job.index, job.mask, result, {
              'fingerprint': setup.fingerprint, 'seed': job.seed,
              'dataset': setup.dataset_info, 'design': None,
              'num_trials': setup.design.num_trials,
              'subset_ratio': setup.design.subset_ratio, **job.metadata,
              'batched_heads': True})
        log(f'  {min(start + len(group), len(pending))}/{len(pending)} '
            'heads trained and recorded')
    return base.load_planned(directory, setup, jobs)

  def _plot(self, output_dir, variants):
    estimate_figures.ablation_histogram(
        os.path.join(output_dir, estimates.ABLATION_PNG), variants)


def _l2_of(layer):
  regularizer = getattr(layer, 'kernel_regularizer', None)
  return float(getattr(regularizer, 'l2', 0.0) or 0.0)


def keras_features(trainer, head='logits'):
  """The features the head `head` (a name or an index among model.layers)
  of the trainer's model reads (its input: the pooled features of a
  models.py ResNet), train and test."""
  model = trainer.model
  layer = model.layers[_positions(model, [head],
                                  'AblationExperiment.head_layer')[0]]
  if not isinstance(layer, keras.layers.Dense) or len(layer.input.shape) != 2:
    raise errors.UserError(
        f'The ablation\'s batched heads need a Dense head on a feature vector;'
        f' {model.name}\'s head {layer.name!r} is a {type(layer).__name__} on '
        f'inputs of shape {tuple(layer.input.shape)}. Bind '
        'AblationExperiment.batched_heads = False (one network per trial), '
        'or AblationExperiment.head_layer.')
  extractor = keras.Model(model.inputs, layer.input)
  out = {}
  for split in ('train', 'test'):
    ds = trainer.pipeline.evaluation(split, trainer.eval_batch_size)
    out[split] = extractor.predict(ds.map(lambda x, y: x), verbose=0).astype(
        np.float32)
  return out


def train_linear_heads(features, train_labels, test_labels, masks, seeds,
                       num_classes, epochs, batch_size, learning_rate,
                       momentum, weight_decay, order_seed=None):
  """Trains one softmax head per mask, all at once, on fixed features.

  Every step draws a batch of the whole training set; head g's loss averages
  the cross-entropy over the batch's examples in its subset (masks[g]), so
  each head sees exactly its subset once per epoch. SGD with momentum, cosine
  learning rate, L2 on the kernels, Glorot-uniform initialisation from the
  head's seed: the schedule of the full-network trials. The batches' order,
  shared by all heads, comes from `order_seed` (default: seeds[0]); a
  caller that trains some heads now and others later passes the same one,
  so that a head is the same whichever heads it trains with.

  Returns:
    A trainer_lib.TrialResult per head.
  """
  train_x = tf.constant(features['train'])
  test_x = tf.constant(features['test'])
  num_heads, n = masks.shape
  dim = int(train_x.shape[1])
  limit = np.sqrt(6.0 / (dim + num_classes))
  kernels = np.stack([np.random.default_rng(s).uniform(
      -limit, limit, (dim, num_classes)) for s in seeds]).astype(np.float32)
  kernel = tf.Variable(kernels)
  bias = tf.Variable(tf.zeros((num_heads, num_classes)))
  velocity = [tf.Variable(tf.zeros_like(kernel)), tf.Variable(tf.zeros_like(bias))]
  steps_per_epoch = -(-n // batch_size)
  total_steps = float(steps_per_epoch * epochs)
  one_hot = tf.one_hot(train_labels, num_classes)
  mask_t = tf.constant(masks, tf.float32)

  @tf.function
  def step(index, step_number):
    x = tf.gather(train_x, index)
    y = tf.gather(one_hot, index)
    m = tf.gather(mask_t, index, axis=1)                      # [G, B]
    with tf.GradientTape() as tape:
      logits = tf.einsum('bd,gdc->gbc', x, kernel) + bias[:, None, :]
      ce = tf.nn.softmax_cross_entropy_with_logits(
          tf.broadcast_to(y, tf.shape(logits)), logits)       # [G, B]
      per_head = tf.reduce_sum(ce * m, 1) / tf.maximum(tf.reduce_sum(m, 1), 1)
      loss = tf.reduce_sum(per_head) + weight_decay * tf.reduce_sum(
          tf.square(kernel))
    grads = tape.gradient(loss, [kernel, bias])
    lr = learning_rate * 0.5 * (1 + tf.cos(np.pi * step_number / total_steps))
    for v, g, var in zip(velocity, grads, (kernel, bias)):
      v.assign(momentum * v - lr * g)
      var.assign_add(v)

  rng = np.random.default_rng(int(seeds[0] if order_seed is None
                                  else order_seed))
  number = 0
  for _ in range(epochs):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
      step(tf.constant(order[start:start + batch_size]),
           tf.constant(float(number)))
      number += 1

  def outputs(x, labels):
    logits = (tf.einsum('nd,gdc->gnc', x, kernel)
              + bias[:, None, :]).numpy()                     # [G, N, C]
    probs = tf.nn.softmax(logits).numpy()
    rows = np.arange(len(labels))
    true_logit = logits[:, rows, labels]
    others = logits.copy()
    others[:, rows, labels] = -np.inf
    top = others.max(-1)
    # log Σ_{y'≠y} exp z_y', shifted by the largest other logit.
    rest = top + np.log(np.exp(others - top[..., None]).sum(-1))
    return (logits.argmax(-1), probs[:, rows, labels], true_logit - top,
            true_logit - rest)

  train_out = outputs(train_x, np.asarray(train_labels))
  test_out = outputs(test_x, np.asarray(test_labels))
  results = []
  for g in range(num_heads):
    correct = train_out[0][g] == train_labels
    results.append(trainer_lib.TrialResult(
        train_pred=train_out[0][g], train_prob=train_out[1][g],
        train_margin=train_out[2][g], test_pred=test_out[0][g],
        test_prob=test_out[1][g], test_margin=test_out[2][g],
        train_logodds=train_out[3][g], test_logodds=test_out[3][g],
        metrics={'train_accuracy': float(correct[masks[g]].mean()),
                 'heldout_accuracy': (float(correct[~masks[g]].mean())
                                      if (~masks[g]).any() else float('nan')),
                 'test_accuracy': float((test_out[0][g] == test_labels).mean()),
                 'subset_size': int(masks[g].sum())}))
  return results
