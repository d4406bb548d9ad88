"""Experiments that retrain models: ablation, removal, leave-one-out, ratio sweep.

Each experiment trains its models through the same public trainer as the
train binary (runs.build / runs.train_jobs) and keeps every retrained model as
a trial record under W/experiments/<name>/, next to a `plan.json` naming each
job (its mask, seed and role). Running the estimator again resumes an
interrupted experiment: jobs whose records exist are not retrained, and a plan
that no longer matches (e.g. the memorization estimates changed because more
trials were added) is refused with a message saying which folder to delete.

Outputs (W/estimates/): one CSV table and one JSON summary per experiment,
plus a PNG where a plot says more than the table.
"""

import dataclasses
import hashlib
import json
import os

import gin
import numpy as np
import tensorflow as tf

from tf_memorization import cli
from tf_memorization import errors
from tf_memorization import masks as masks_lib
from tf_memorization import records
from tf_memorization import runs
from tf_memorization import scores

EXPERIMENTS_DIR = 'experiments'


def _seed(base_seed, name, index):
  digest = hashlib.sha256(f'{base_seed}:{name}:{index}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF


def experiment_dir(workdir, name):
  return os.path.join(workdir, EXPERIMENTS_DIR, name)


def prepare(workdir, name, setup, jobs):
  """Creates (or checks) W/experiments/<name>: dataset file and plan.

  Raises:
    cli.UserError: the folder holds a different plan.
  """
  directory = experiment_dir(workdir, name)
  tf.io.gfile.makedirs(directory)
  records.write_dataset_file(directory, setup.clean_dataset,
                             setup.dataset.train.labels)
  plan = {'fingerprint': setup.fingerprint,
          'jobs': [{'index': j.index, 'seed': j.seed,
                    'mask': records.mask_digest(j.mask), **j.metadata} for j in jobs]}
  path = os.path.join(directory, records.PLAN_FILE)
  text = json.dumps(plan, sort_keys=True, indent=1)
  if tf.io.gfile.exists(path):
    if records.read_bytes(path) != text.encode():
      raise cli.UserError(
          f'{path} describes other jobs than this run asks for (the config, '
          'the estimates it starts from, or its bindings changed). Delete '
          f'{directory} to redo the experiment, or restore its settings.')
  else:
    records.atomic_write_text(path, text)
  return directory


def load_planned(directory, setup, jobs):
  """The records of an experiment folder, each checked against its planned
  job (mask, seed) and the run's fingerprint: a record of other models
  (copied, or a linked trials folder) is refused, not counted."""
  return records.load(directory, margins=False, jobs=jobs,
                      fingerprint=setup.fingerprint)


def run_jobs(workdir, name, setup, jobs, log):
  directory = prepare(workdir, name, setup, jobs)
  runs.train_jobs(setup, directory, jobs, log=log, label=f'{name} models')
  return load_planned(directory, setup, jobs)


def _write_table(output_dir, stem, header, rows, summary):
  lines = [','.join(header)]
  for row in rows:
    lines.append(','.join('' if (isinstance(v, float) and not np.isfinite(v))
                          else (f'{v:.6g}' if isinstance(v, float) else str(v))
                          for v in row))
  records.atomic_write_text(os.path.join(output_dir, f'{stem}.csv'),
                            '\n'.join(lines) + '\n')
  records.atomic_write_text(
      os.path.join(output_dir, f'{stem}.json'),
      json.dumps(records.json_safe(summary), indent=2, sort_keys=True,
                 allow_nan=False))


def _save_figure(fig, path):
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=110, bbox_inches='tight')
  records.atomic_replace(path, buffer.getvalue())


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _mean_std(values):
  values = np.asarray(values, np.float64)
  if not len(values):
    return float('nan'), float('nan')
  return float(values.mean()), float(values.std(ddof=1) if len(values) > 1
                                     else 0.0)


# --------------------------------------------------------------------------
# Test-accuracy removal (the paper's marginal-utility experiment)


@gin.configurable
class RemovalExperiment:
  """Remove memorized (or high-influence) examples, retrain, measure accuracy.

  Args:
    thresholds: remove the training examples with memorization >= each.
    repeats: models trained per condition (r).
    influence_set: also remove the training examples of the high-influence
      pairs, and measure accuracy on the influenced test examples.
  """

  def __init__(self, thresholds=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5), repeats=3,
               influence_set=True):
    name = 'RemovalExperiment.'
    self.thresholds = errors.sequence(name + 'thresholds', thresholds,
                                      errors.number)
    self.repeats = errors.integer(name + 'repeats', repeats, minimum=1)
    self.influence_set = errors.boolean(name + 'influence_set', influence_set)

  def jobs(self, setup, memorization, pair_train):
    """The plan: full data, memorized vs random removal, influence set."""
    n = len(setup.dataset.train)
    rng = np.random.default_rng([setup.design.seed, 0x2E3])
    jobs = []

    def add(condition, removed, **extra):
      for repeat in range(self.repeats):
        mask = np.ones(n, bool)
        mask[removed] = False
        index = len(jobs)
        jobs.append(runs.Job(index, mask, _seed(setup.design.seed, 'removal',
                                                index),
                             {'condition': condition, 'repeat': repeat,
                              'num_removed': int(len(removed)), **extra}))

    add('full', np.zeros(0, np.int64))
    defined = np.isfinite(memorization)
    for threshold in self.thresholds:
      removed = np.flatnonzero(defined & (memorization >= threshold))
      random_removed = np.sort(rng.choice(n, size=len(removed), replace=False))
      add('memorized', removed, threshold=threshold)
      add('random', random_removed, threshold=threshold)
    if self.influence_set:
      removed = np.unique(pair_train)
      add('influence_set', removed)
      add('influence_random',
          np.sort(rng.choice(n, size=len(removed), replace=False)))
    return jobs

  def run(self, workdir, output_dir, setup, mem, infl, log):
    jobs = self.jobs(setup, mem.memorization, infl.pair_train)
    loaded = run_jobs(workdir, 'removal', setup, jobs, log)
    by_index = {int(t): row for row, t in enumerate(loaded.trial_indices)}
    influenced = np.unique(infl.pair_test)
    groups = {}
    for job in jobs:
      row = by_index[job.index]
      key = (job.metadata['condition'], job.metadata.get('threshold'))
      test = loaded.test_correct[row]
      groups.setdefault(key, {'num_removed': job.metadata['num_removed'],
                              'overall': [], 'influenced': []})
      groups[key]['overall'].append(test.mean())
      if len(influenced):
        groups[key]['influenced'].append(test[influenced].mean())
    header = ['condition', 'threshold', 'num_removed', 'test_accuracy_mean',
              'test_accuracy_std', 'influenced_accuracy_mean',
              'influenced_accuracy_std', 'models']
    rows, table = [], []
    for (condition, threshold), g in groups.items():
      overall, influenced_acc = _mean_std(g['overall']), _mean_std(
          g['influenced'])
      rows.append([condition, '' if threshold is None else threshold,
                   g['num_removed'], *overall, *influenced_acc,
                   len(g['overall'])])
      table.append({'condition': condition, 'threshold': threshold,
                    'num_removed': g['num_removed'],
                    'test_accuracy': overall,
                    'influenced_accuracy': influenced_acc})
    summary = {'repeats': self.repeats, 'thresholds': list(self.thresholds),
               'num_influenced_test_examples': int(len(influenced)),
               'table': table}
    _write_table(output_dir, 'removal', header, rows, summary)
    self._plot(output_dir, table)
    lines = ['Removal (test accuracy, mean ± std over '
             f'{self.repeats} models):']
    for entry in table:
      threshold = ('' if entry['threshold'] is None
                   else f' θ={entry["threshold"]:g}')
      lines.append(f'  {entry["condition"]}{threshold}: removed '
                   f'{entry["num_removed"]}, accuracy '
                   f'{entry["test_accuracy"][0]:.4f} ± '
                   f'{entry["test_accuracy"][1]:.4f}')
    log('\n'.join(lines))
    return summary

  def _plot(self, output_dir, table):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for condition, style in (('memorized', 'o-'), ('random', 's--')):
      entries = [e for e in table if e['condition'] == condition]
      if not entries:
        continue
      ax.errorbar([e['num_removed'] for e in entries],
                  [e['test_accuracy'][0] for e in entries],
                  yerr=[e['test_accuracy'][1] for e in entries], fmt=style,
                  capsize=3, label=f'{condition} removed')
    full = [e for e in table if e['condition'] == 'full']
    if full:
      ax.axhline(full[0]['test_accuracy'][0], color='grey', lw=0.8,
                 label='full training set')
    ax.set_xlabel('training examples removed')
    ax.set_ylabel('test accuracy')
    ax.legend()
    ax.set_title('Removing memorized vs random examples')
    _save_figure(fig, os.path.join(output_dir, 'removal.png'))
    plt.close(fig)


# --------------------------------------------------------------------------
# Last-layer / last-N-blocks ablation


def block_names(model):
  """Residual block prefixes of a models.py ResNet, input to output."""
  names = []
  for layer in model.layers:
    parts = layer.name.split('_')
    if len(parts) > 2 and parts[0].startswith('stage') and parts[1].startswith(
        'block'):
      prefix = f'{parts[0]}_{parts[1]}'
      if prefix not in names:
        names.append(prefix)
  return names


def trainable_layers_for(model, num_blocks):
  """Layer names trained when only the last `num_blocks` blocks + head train."""
  blocks = block_names(model)
  if num_blocks > len(blocks):
    raise cli.UserError(
        f'AblationExperiment.trainable_blocks asks for {num_blocks} blocks but '
        f'{model.name} has {len(blocks)}.')
  chosen = blocks[len(blocks) - num_blocks:] if num_blocks else []
  return [layer.name for layer in model.layers
          if layer.name == 'logits' or
          any(layer.name.startswith(prefix + '_') for prefix in chosen)]


@gin.configurable
class AblationExperiment:
  """Is memorization in the representation? Retrain only the top of the net.

  A reference model is trained on the full training set; then, for each N in
  `trainable_blocks`, k models (one per subset mask of the full-network
  trials) train only the last N residual blocks and the linear head (N = 0:
  the last layer only, the paper's experiment) from a fresh initialisation,
  with everything below frozen at the reference weights. The same scores are
  computed from their predictions.

  Args:
    trainable_blocks: the N values.
    max_trials: use only the first this many subset masks (None: all k).
    batched_heads: for N = 0, train all the linear heads at once on the
      reference model's penultimate features (computed once, without
      augmentation) instead of one frozen network per trial.
    heads_per_group: heads trained together (bounds memory:
      heads x features x classes floats).
  """

  def __init__(self, trainable_blocks=(0,), max_trials=None,
               batched_heads=True, heads_per_group=256):
    name = 'AblationExperiment.'
    self.trainable_blocks = errors.sequence(
        name + 'trainable_blocks', trainable_blocks,
        lambda n, v: errors.integer(n, v, minimum=0))
    self.max_trials = errors.integer(name + 'max_trials', max_trials,
                                     minimum=2, allow_none=True)
    self.batched_heads = errors.boolean(name + 'batched_heads', batched_heads)
    self.heads_per_group = errors.integer(name + 'heads_per_group',
                                          heads_per_group, minimum=1)

  def _reference_weights(self, workdir, setup, log):
    directory = experiment_dir(workdir, 'ablation_reference')
    path = os.path.join(directory, 'reference.weights.npz')
    if tf.io.gfile.exists(path):
      stored = records.load_npz(path)
      return [stored[f'w{i}'] for i in range(len(stored))]
    n = len(setup.dataset.train)
    job = runs.Job(0, np.ones(n, bool),
                   _seed(setup.design.seed, 'ablation_reference', 0),
                   {'role': 'reference'})
    prepare(workdir, 'ablation_reference', setup, [job])
    log('Ablation: training the reference model on the full training set.')
    setup.trainer.train_trial(job.mask, job.seed)
    weights = setup.trainer.model.get_weights()
    records.atomic_write(path, records.npz_bytes(
        {f'w{i}': w for i, w in enumerate(weights)}))
    return weights

  def run(self, workdir, output_dir, setup, main, main_mem, main_infl,
          estimator, log):
    reference = self._reference_weights(workdir, setup, log)
    k = main.num_trials if self.max_trials is None else min(
        self.max_trials, main.num_trials)
    rows, summary = [], {'variants': []}
    if k < main.num_trials:  # compare like with like: the same k trials
      main_mem = scores.memorization(main.masks[:k], main.train_correct[:k])
      main_infl = estimator.influence_of(main, main_mem.memorization,
                                         rows=slice(0, k), topk=0)
    full = {'variant': 'full network', 'trainable_blocks': None,
            'mean_test_accuracy': float(main.test_correct[:k].mean()),
            'memorized_025': int(np.nansum(main_mem.memorization >= 0.25)),
            'num_pairs': int(len(main_infl.pair_train))}
    variants = [(full, main_mem.memorization)]
    for num_blocks in self.trainable_blocks:
      name = f'ablation_last{num_blocks}'
      layers = trainable_layers_for(setup.trainer.model, num_blocks)
      sub = dataclasses.replace(setup, trainer=type(setup.trainer)(
          setup.dataset, setup.strategy, trainable_layers=layers))
      sub.trainer.set_base_weights(reference)
      jobs = [runs.Job(int(t), main.masks[row],
                       _seed(setup.design.seed, name, int(t)),
                       {'trainable_blocks': num_blocks})
              for row, t in enumerate(main.trial_indices[:k])]
      if num_blocks == 0 and self.batched_heads:
        sub.trainer.model.set_weights(reference)
        loaded = self._batched_heads(workdir, name, sub, jobs, log)
      else:
        loaded = run_jobs(workdir, name, sub, jobs, log)
      mem = scores.memorization(loaded.masks, loaded.train_correct,
                                loaded.train_prob)
      infl = estimator.influence_of(loaded, mem.memorization, topk=0)
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
    _write_table(output_dir, 'ablation', header, rows, summary)
    self._plot(output_dir, variants)
    log('Ablation (mean test accuracy, examples with mem >= 0.25, pairs):\n' +
        '\n'.join(f'  {e["variant"]}: {e["mean_test_accuracy"]:.4f}, '
                  f'{e["memorized_025"]}, {e["num_pairs"]}'
                  for e, _ in variants))
    return summary

  def _batched_heads(self, workdir, name, setup, jobs, log):
    """Trains the jobs' linear heads together; writes one record per job."""
    directory = prepare(workdir, name, setup, jobs)
    found = records.list_records(directory)
    pending = [job for job in jobs if job.index not in found]
    if pending:
      trainer = setup.trainer
      features = keras_features(trainer)
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
            weight_decay=_l2_of(trainer.model.get_layer('logits')))
        for job, result in zip(group, outputs):
          records.write_record(directory, job.index, job.mask, result, {
              'fingerprint': setup.fingerprint, 'seed': job.seed,
              'dataset': setup.dataset_info, 'design': None,
              'num_trials': setup.design.num_trials,
              'subset_ratio': setup.design.subset_ratio, **job.metadata,
              'batched_heads': True})
        log(f'  {min(start + len(group), len(pending))}/{len(pending)} '
            'heads trained and recorded')
    return load_planned(directory, setup, jobs)

  def _plot(self, output_dir, variants):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-0.2, 1.0, 25)
    for entry, values in variants:
      ax.hist(values[np.isfinite(values)], bins=bins, alpha=0.5,
              label=entry['variant'], log=True)
    ax.set_xlabel('memorization estimate')
    ax.set_ylabel('training examples (log)')
    ax.legend()
    ax.set_title('Memorization: full network vs retrained top')
    _save_figure(fig, os.path.join(output_dir, 'ablation_histogram.png'))
    plt.close(fig)


def _l2_of(layer):
  regularizer = getattr(layer, 'kernel_regularizer', None)
  return float(getattr(regularizer, 'l2', 0.0) or 0.0)


def keras_features(trainer):
  """Penultimate ('pool') features of the trainer's model, train and test."""
  import keras  # pylint: disable=g-import-not-at-top
  model = trainer.model
  extractor = keras.Model(model.inputs, model.get_layer('pool').output)
  out = {}
  for split in ('train', 'test'):
    ds = trainer.pipeline.evaluation(split, trainer.eval_batch_size)
    out[split] = extractor.predict(ds.map(lambda x, y: x), verbose=0).astype(
        np.float32)
  return out


def train_linear_heads(features, train_labels, test_labels, masks, seeds,
                       num_classes, epochs, batch_size, learning_rate,
                       momentum, weight_decay):
  """Trains one softmax head per mask, all at once, on fixed features.

  Every step draws a batch of the whole training set; head g's loss averages
  the cross-entropy over the batch's examples in its subset (masks[g]), so
  each head sees exactly its subset once per epoch. SGD with momentum, cosine
  learning rate, L2 on the kernels, Glorot-uniform initialisation from the
  head's seed: the schedule of the full-network trials.

  Returns:
    A training.TrialResult per head.
  """
  from tf_memorization import training  # pylint: disable=g-import-not-at-top
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

  rng = np.random.default_rng(int(seeds[0]))
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
    return (logits.argmax(-1), probs[:, rows, labels],
            true_logit - others.max(-1))

  train_out = outputs(train_x, np.asarray(train_labels))
  test_out = outputs(test_x, np.asarray(test_labels))
  results = []
  for g in range(num_heads):
    correct = train_out[0][g] == train_labels
    results.append(training.TrialResult(
        train_pred=train_out[0][g], train_prob=train_out[1][g],
        train_margin=train_out[2][g], test_pred=test_out[0][g],
        test_prob=test_out[1][g], test_margin=test_out[2][g],
        metrics={'train_accuracy': float(correct[masks[g]].mean()),
                 'heldout_accuracy': (float(correct[~masks[g]].mean())
                                      if (~masks[g]).any() else float('nan')),
                 'test_accuracy': float((test_out[0][g] == test_labels).mean()),
                 'subset_size': int(masks[g].sum())}))
  return results


# --------------------------------------------------------------------------
# Direct leave-one-out check


@gin.configurable
class LeaveOneOutExperiment:
  """Memorization estimated directly, by leaving single examples out.

  For each chosen example i: r models on the full training set and r on the
  full set minus i; mem_loo(i) = mean C_full(i) - mean C_without_i(i), next to
  the subsampled estimate, both with standard errors.

  Args:
    examples: training indices, or 'auto': the `per_group` highest and lowest
      by memorization and `per_group` random ones.
    per_group: size of each 'auto' group.
    repeats: r.
  """

  def __init__(self, examples='auto', per_group=10, repeats=3):
    name = 'LeaveOneOutExperiment.'
    if examples != 'auto':
      examples = errors.sequence(name + 'examples', examples,
                                 lambda n, v: errors.integer(n, v, minimum=0))
    self.examples = examples
    self.per_group = errors.integer(name + 'per_group', per_group, minimum=1)
    self.repeats = errors.integer(name + 'repeats', repeats, minimum=1)

  def chosen(self, memorization, seed):
    if self.examples != 'auto':
      return np.asarray(self.examples, np.int64)
    defined = np.flatnonzero(np.isfinite(memorization))
    order = defined[np.argsort(memorization[defined], kind='stable')]
    top, bottom = order[::-1][:self.per_group], order[:self.per_group]
    rest = np.setdiff1d(defined, np.concatenate([top, bottom]))
    rng = np.random.default_rng([seed, 0x100])
    random = rng.choice(rest, size=min(self.per_group, len(rest)),
                        replace=False)
    return np.unique(np.concatenate([top, bottom, random]))

  def jobs(self, setup, chosen):
    n = len(setup.dataset.train)
    jobs = []
    for target in [None] + [int(i) for i in chosen]:
      for repeat in range(self.repeats):
        mask = np.ones(n, bool)
        if target is not None:
          mask[target] = False
        index = len(jobs)
        jobs.append(runs.Job(index, mask, _seed(setup.design.seed, 'loo',
                                                index),
                             {'left_out': -1 if target is None else target,
                              'repeat': repeat}))
    return jobs

  def run(self, workdir, output_dir, setup, mem, log):
    chosen = self.chosen(mem.memorization, setup.design.seed)
    jobs = self.jobs(setup, chosen)
    loaded = run_jobs(workdir, 'leave_one_out', setup, jobs, log)
    rows_of = {}
    for row, meta in enumerate(loaded.metadata):
      rows_of.setdefault(meta['left_out'], []).append(row)
    full_rows = rows_of[-1]
    header = ['index', 'memorization_loo', 'memorization_loo_stderr',
              'memorization_subsampled', 'memorization_subsampled_stderr']
    rows, direct, subsampled = [], [], []
    for i in chosen:
      with_i = loaded.train_correct[full_rows, i].astype(np.float64)
      without_i = loaded.train_correct[rows_of[int(i)], i].astype(np.float64)
      p_in, p_out = with_i.mean(), without_i.mean()
      stderr = np.sqrt(p_in * (1 - p_in) / len(with_i)
                       + p_out * (1 - p_out) / len(without_i))
      rows.append([int(i), p_in - p_out, stderr, float(mem.memorization[i]),
                   float(mem.stderr[i])])
      direct.append(p_in - p_out)
      subsampled.append(mem.memorization[i])
    pearson, spearman = scores.rank_correlations(direct, subsampled)
    summary = {'examples': [int(i) for i in chosen], 'repeats': self.repeats,
               'pearson': pearson, 'spearman': spearman,
               'mean_abs_difference': float(np.nanmean(np.abs(
                   np.asarray(direct) - np.asarray(subsampled))))}
    _write_table(output_dir, 'leave_one_out', header, rows, summary)
    self._plot(output_dir, rows)
    log(f'Leave-one-out vs subsampled memorization on {len(chosen)} examples: '
        f'Spearman {spearman:.3f}, Pearson {pearson:.3f}.')
    return summary

  def _plot(self, output_dir, rows):
    plt = _pyplot()
    rows = np.asarray(rows, np.float64)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.errorbar(rows[:, 3], rows[:, 1], xerr=rows[:, 4], yerr=rows[:, 2],
                fmt='o', capsize=2)
    ax.plot([-1, 1], [-1, 1], color='grey', lw=0.8)
    ax.set_xlim(-0.3, 1.05)
    ax.set_ylim(-0.3, 1.05)
    ax.set_xlabel('subsampled estimate')
    ax.set_ylabel('direct leave-one-out')
    ax.set_title('Memorization: estimate vs leave-one-out')
    _save_figure(fig, os.path.join(output_dir, 'leave_one_out.png'))
    plt.close(fig)


# --------------------------------------------------------------------------
# Subset-ratio sweep


@gin.configurable
class SubsetRatioSweep:
  """The same estimates at other subset ratios, in the same workdir.

  Args:
    ratios: subset ratios to add (the main run's ratio is the reference).
    num_trials: trials per ratio (None: as many as the main run has).
  """

  def __init__(self, ratios=(0.5, 0.9), num_trials=None):
    name = 'SubsetRatioSweep.'
    self.ratios = errors.sequence(
        name + 'ratios', ratios,
        lambda n, v: errors.number(n, v, above=0, below=1))
    self.num_trials = errors.integer(name + 'num_trials', num_trials,
                                     minimum=2, allow_none=True)

  def run(self, workdir, output_dir, setup, main, main_mem, log):
    k = self.num_trials or main.num_trials
    base = setup.design
    header = ['subset_ratio', 'effective_ratio', 'trials',
              'mean_test_accuracy', 'examples_memorization_ge_0.25',
              'median_stderr', 'mean_stderr', 'spearman_with_main',
              'lemma_2_1_bound']
    main_ratio = base.subset_ratio
    entries = [(main_ratio, float(main.masks.mean()), main.num_trials,
                float(main.test_correct.mean()), main_mem, 1.0)]
    for ratio in self.ratios:
      design = masks_lib.SubsetDesign(num_trials=max(k, 2),
                                      subset_ratio=ratio, design=base.design,
                                      seed=base.seed)
      sub = dataclasses.replace(setup, design=design,
                                fingerprint=runs.config_fingerprint(
                                    setup.dataset_info, design))
      n = len(setup.dataset.train)
      jobs = [runs.Job(t, design.mask(n, t), design.trial_seed(t),
                       {'subset_ratio': ratio}, from_design=True)
              for t in range(design.num_trials)]
      loaded = run_jobs(workdir, f'ratio_{ratio:g}', sub, jobs, log)
      mem = scores.memorization(loaded.masks, loaded.train_correct)
      spearman = scores.rank_correlations(mem.memorization,
                                          main_mem.memorization)[1]
      effective = float(loaded.masks.mean())
      if abs(effective - ratio) > 0.05:
        log(f'Warning: subset ratio {ratio:g} with {loaded.num_trials} '
            f'trials of the {design.design} design trains on {effective:.3f} '
            'of the data; use more trials.')
      entries.append((ratio, effective, loaded.num_trials,
                      float(loaded.test_correct.mean()), mem, spearman))
    rows, table = [], []
    for ratio, effective, trials, accuracy, mem, spearman in sorted(
        entries, key=lambda e: e[0]):
      row = [ratio, effective, trials, accuracy,
             int(np.nansum(mem.memorization >= 0.25)),
             float(np.nanmedian(mem.stderr)), float(np.nanmean(mem.stderr)),
             spearman, scores.lemma_2_1_bound(trials, effective)]
      rows.append(row)
      table.append(dict(zip(header, row)))
    summary = {'main_subset_ratio': main_ratio, 'table': table}
    _write_table(output_dir, 'ratio_sweep', header, rows, summary)
    log('Subset-ratio sweep (ratio: examples with mem >= 0.25, mean stderr, '
        'Spearman with the main run):\n' + '\n'.join(
            f'  {r[0]:g}: {r[4]}, {r[6]:.4f}, {r[7]:.3f}' for r in rows))
    return summary


# The experiments by the name Estimator.experiments gives them.
BY_KIND = {'ablation': AblationExperiment, 'removal': RemovalExperiment,
           'leave_one_out': LeaveOneOutExperiment,
           'ratio_sweep': SubsetRatioSweep}
KINDS = tuple(BY_KIND)


# --------------------------------------------------------------------------
# Analyses that need no retraining


def label_noise_report(memorization, flipped_mask):
  """How well memorization ranks flipped labels first (ROC AUC, precision).

  Args:
    memorization: float [n] (NaN: not estimable, left out).
    flipped_mask: bool [n], True where label noise flipped the label.

  Returns:
    dict with auc, precision_at_flipped, counts, and the ROC curve points.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  ok = np.isfinite(memorization)
  values, positive = memorization[ok], flipped_mask[ok]
  num_pos, num_neg = int(positive.sum()), int((~positive).sum())
  report = {'num_flipped': int(flipped_mask.sum()),
            'num_flipped_estimable': num_pos, 'num_clean_estimable': num_neg}
  if not num_pos or not num_neg:
    report.update(auc=float('nan'), precision_at_flipped=float('nan'),
                  roc_fpr=[], roc_tpr=[])
    return report
  ranks = stats.rankdata(values)  # ties share the average rank
  auc = (ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (
      num_pos * num_neg)
  order = np.argsort(-values, kind='stable')
  precision = float(positive[order[:num_pos]].mean())
  thresholds = np.unique(values)[::-1]
  tpr = [0.0] + [float((values[positive] >= t).mean()) for t in thresholds]
  fpr = [0.0] + [float((values[~positive] >= t).mean()) for t in thresholds]
  report.update(auc=float(auc), precision_at_flipped=precision, roc_fpr=fpr,
                roc_tpr=tpr)
  return report


def write_label_noise(output_dir, report, log):
  header = ['false_positive_rate', 'true_positive_rate']
  rows = list(zip(report['roc_fpr'], report['roc_tpr']))
  summary = {k: v for k, v in report.items() if not k.startswith('roc_')}
  _write_table(output_dir, 'label_noise', header, rows, summary)
  if rows:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(report['roc_fpr'], report['roc_tpr'],
            label=f'memorization (AUC {report["auc"]:.3f})')
    ax.plot([0, 1], [0, 1], color='grey', lw=0.8)
    ax.set_xlabel('false positive rate')
    ax.set_ylabel('true positive rate')
    ax.set_title('Finding flipped labels by memorization')
    ax.legend(loc='lower right')
    _save_figure(fig, os.path.join(output_dir, 'label_noise_roc.png'))
    plt.close(fig)
  log(f'Label noise: {report["num_flipped"]} flipped labels; memorization '
      f'ranks them with ROC AUC {report["auc"]:.3f}, precision at '
      f'{report["num_flipped_estimable"]}: '
      f'{report["precision_at_flipped"]:.3f}.')


def memorization_vs_influence(output_dir, memorization, max_influence, log):
  pearson, spearman = scores.rank_correlations(memorization, max_influence)
  rows = [[i, float(m), float(x)] for i, (m, x) in
          enumerate(zip(memorization, max_influence))]
  summary = {'pearson': pearson, 'spearman': spearman}
  _write_table(output_dir, 'memorization_vs_influence',
               ['index', 'memorization', 'max_influence'], rows, summary)
  log(f'Memorization vs largest influence on a test example: Pearson '
      f'{pearson:.3f}, Spearman {spearman:.3f}.')
  return summary
