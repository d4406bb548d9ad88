"""Learning-rate schedules of the trials (TrialTrainer.schedule)."""

import math

import keras
import tensorflow as tf

SCHEDULES = ('cosine', 'piecewise', 'constant')


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
