"""Learning-dynamics proxies, accumulated inside the compiled training step.

For every training example i in a trial's subset, at each visit v = 1, 2, ...
(each time a training batch holds it; one visit per epoch, one more for the
examples of the last batch's partial pass), the step computes from the logits
it has already computed

    loss_v(i)    = − log softmax(z)_{y_i}   (cross-entropy against the label,
                   without label smoothing, on the augmented training image,
                   in training mode: what the gradient step sees)
    correct_v(i) = 1[argmax z = y_i]

and keeps, per example (Toneva et al. 2019; Ravikumar et al. 2025):

    csl            = Σ_v loss_v(i)                  cumulative sample loss
    final_loss     = loss_V(i) at its last visit V
    forgetting     = #{v > 1 : correct_{v−1}(i) = 1 and correct_v(i) = 0}
    learned_epoch  = max{v : correct_v(i) = 0}, 0 if it was never wrong:
                     the visits before it was learned for good; equal to
                     `visits` when it was wrong at its last visit
    visits         = V

No pass over the data is added: the trainer hands each step's batch indices,
losses and correctness to `update`, which scatters them into [K, n]
variables (K = the models trained together). Visits are taken in the order
of the stream; an example that a batch holds twice (a batch across a pass
boundary) is updated once per occurrence, in batch order.

`reference` computes the same from a list of batches in plain numpy: the
definition the tests hold the compiled accumulation to.
"""

import numpy as np
import tensorflow as tf

# What a record holds per training example (format 3; absent from records of
# trials trained with TrialTrainer.record_dynamics = False).
FIELDS = ('csl', 'final_loss', 'learned_epoch', 'forgetting', 'visits')
FLOAT_FIELDS = ('csl', 'final_loss')
RECORD_FIELDS = tuple(f'train_{name}' for name in FIELDS)


class LearningDynamics:
  """The proxies of K trials trained together, as [K, n] variables.

  Created outside any strategy scope: they are updated in the cross-replica
  part of the compiled step, from the whole global batch.
  """

  def __init__(self, copies, num_train):
    self.copies, self.num_train = int(copies), int(num_train)
    shape = [self.copies, self.num_train]

    def variable(name, dtype):
      return tf.Variable(tf.zeros(shape, dtype), trainable=False,
                         name=f'dynamics_{name}')

    self.variables = {
        'csl': variable('csl', tf.float32),
        'final_loss': variable('final_loss', tf.float32),
        'learned_epoch': variable('learned_epoch', tf.int32),
        'forgetting': variable('forgetting', tf.int32),
        'visits': variable('visits', tf.int32),
        'last_correct': variable('last_correct', tf.int32),
    }

  def reset(self):
    for v in self.variables.values():
      v.assign(tf.zeros_like(v))

  def state(self, k):
    """Copy k's accumulators as numpy arrays (for a checkpoint)."""
    return {name: v[k].numpy() for name, v in self.variables.items()}

  def restore(self, k, state):
    for name, v in self.variables.items():
      v[k].assign(state[name])

  def update(self, indices, losses, correct):
    """One step: batch rows [B, K] of example indices, losses, correctness.

    Row b of column k is the b-th example of copy k's global batch.
    """
    indices = tf.cast(indices, tf.int32)
    losses = tf.cast(losses, tf.float32)
    correct = tf.cast(correct, tf.int32)
    copy = tf.broadcast_to(tf.range(self.copies, dtype=tf.int32)[None, :],
                           tf.shape(indices))
    where = tf.reshape(tf.stack([copy, indices], axis=-1), [-1, 2])
    losses = tf.reshape(losses, [-1])
    correct = tf.reshape(correct, [-1])
    rank = tf.reshape(tf.transpose(tf.stack(
        [_occurrence(indices[:, k]) for k in range(self.copies)])), [-1])
    v = self.variables
    # Almost always one round: occurrence 0 of every row.
    for r in tf.range(tf.reduce_max(rank) + 1):
      rows = tf.where(tf.equal(rank, r))[:, 0]
      at = tf.gather(where, rows)
      loss = tf.gather(losses, rows)
      now = tf.gather(correct, rows)
      before = tf.gather_nd(v['last_correct'], at)
      visit = tf.gather_nd(v['visits'], at) + 1
      v['csl'].scatter_nd_add(at, loss)
      v['final_loss'].scatter_nd_update(at, loss)
      v['forgetting'].scatter_nd_add(at, before * (1 - now))
      v['learned_epoch'].scatter_nd_update(
          at, tf.where(now > 0, tf.gather_nd(v['learned_epoch'], at), visit))
      v['last_correct'].scatter_nd_update(at, now)
      v['visits'].scatter_nd_update(at, visit)

  def values(self, k, mask):
    """Copy k's proxies for a record: {record field: [n] array}, the
    subset's examples only (NaN / −1 elsewhere)."""
    return values_for_record(self.state(k), mask)


def values_for_record(state, mask):
  """{train_<field>: [n]} from accumulator arrays, outside `mask` blank."""
  mask = np.asarray(mask, bool)
  out = {}
  for name in FIELDS:
    value = np.asarray(state[name])
    if name in FLOAT_FIELDS:
      stored = np.where(mask, value, np.nan).astype(np.float32)
    else:
      stored = np.where(mask, value, -1).astype(np.int64)
    out[f'train_{name}'] = stored
  return out


def _occurrence(ids):
  """For each position, how many earlier positions hold the same id."""
  size = tf.shape(ids)[0]
  order = tf.argsort(ids, stable=True)
  ordered = tf.gather(ids, order)
  starts = tf.concat([[True], ordered[1:] != ordered[:-1]], axis=0)
  group = tf.cumsum(tf.cast(starts, tf.int32)) - 1
  positions = tf.range(size)
  first = tf.gather(tf.math.segment_min(positions, group), group)
  return tf.scatter_nd(order[:, None], positions - first, [size])


def reference(num_train, batches):
  """The proxies of one trial from its batches, in plain numpy.

  Args:
    num_train: n.
    batches: (indices [B], losses [B], correct [B]) of each step, in order.

  Returns:
    {field: [n] array} with every accumulator of `LearningDynamics`.
  """
  state = {'csl': np.zeros(num_train), 'final_loss': np.zeros(num_train),
           'learned_epoch': np.zeros(num_train, np.int64),
           'forgetting': np.zeros(num_train, np.int64),
           'visits': np.zeros(num_train, np.int64),
           'last_correct': np.zeros(num_train, np.int64)}
  for indices, losses, correct in batches:
    for i, loss, now in zip(indices, losses, correct):
      i, now = int(i), int(bool(now))
      state['visits'][i] += 1
      state['csl'][i] += loss
      state['final_loss'][i] = loss
      if state['last_correct'][i] and not now:
        state['forgetting'][i] += 1
      if not now:
        state['learned_epoch'][i] = state['visits'][i]
      state['last_correct'][i] = now
  return state
