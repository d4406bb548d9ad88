"""What a trial predicts: the inference model and the TrialResult it fills.

One inference pass over the full train and test sets gives, per example and
per model copy, the predicted class, the true-class probability, the margin
(true logit minus the largest other), the log-odds of the true class

    logodds = z_y − log Σ_{y'≠y} exp z_y' = log p_y / (1 − p_y)

computed from the logits (a float16 p_y rounds to 1 above log-odds ≈ 7.6;
this does not), and, when asked, every class probability (float16).
"""

import dataclasses

import keras
import numpy as np


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
  # float [n]: log-odds of the true class (LiRA's logit-scaled confidence).
  # None only in results built by older code.
  train_logodds: np.ndarray = None
  test_logodds: np.ndarray = None
  # {train_<proxy>: [n]} learning-dynamics proxies (dynamics.py), or None.
  dynamics: dict = None
  # float [n − |subset|, C]: class probabilities of the held-out training
  # examples, in index order (TrialTrainer.record_heldout_probs), or None.
  heldout_probs: np.ndarray = None


# Outputs per model copy: pred, prob, margin, logodds (+ class probabilities).
_OUTPUTS = 4


def build_model(models, image_shape, num_classes, class_probs=False):
  """image, label -> per copy of `models`: predicted class, true-class
  prob, margin, log-odds (and the class probabilities, float16)."""
  image = keras.Input(image_shape, name='image')
  label = keras.Input((), dtype='int32', name='label')
  one_hot = keras.ops.one_hot(label, num_classes)
  outputs = []
  for model in models:
    logits = keras.ops.cast(model(image, training=False), 'float32')
    prob = keras.ops.sum(keras.ops.softmax(logits) * one_hot, axis=-1)
    true_logit = keras.ops.sum(logits * one_hot, axis=-1)
    others = keras.ops.where(one_hot > 0, -np.inf, logits)
    pred = keras.ops.cast(keras.ops.argmax(logits, axis=-1), 'int32')
    outputs.extend([pred, prob, true_logit - keras.ops.max(others, axis=-1),
                    true_logit - keras.ops.logsumexp(others, axis=-1)])
    if class_probs:
      outputs.append(keras.ops.cast(keras.ops.softmax(logits), 'float16'))
  return keras.Model([image, label], outputs, name='inference')


def trial_result(outputs, test_outputs, k, mask, dataset, metrics,
                 heldout_probs=False, dynamics=None):
  """Copy k's TrialResult from the inference passes' outputs.

  Args:
    outputs, test_outputs: build_model's outputs on the train and test sets.
    k: the copy.
    mask: bool [n], its trial's subset.
    dataset: the data.Dataset (labels).
    metrics: the trial's training metrics; the accuracies are added.
    heldout_probs: the model was built with class_probs.
    dynamics: the trial's learning-dynamics proxies, or None.
  """
  width = _OUTPUTS + bool(heldout_probs)
  train_pred, train_prob, train_margin, train_logodds = outputs[
      width * k:width * k + _OUTPUTS]
  test_pred, test_prob, test_margin, test_logodds = test_outputs[
      width * k:width * k + _OUTPUTS]
  train_correct = train_pred == dataset.train.labels
  metrics = dict(
      train_accuracy=float(train_correct[mask].mean()),
      heldout_accuracy=(float(train_correct[~mask].mean())
                        if (~mask).any() else float('nan')),
      test_accuracy=float(np.mean(test_pred == dataset.test.labels)),
      **metrics)
  return TrialResult(
      train_pred=train_pred, train_prob=train_prob, train_margin=train_margin,
      test_pred=test_pred, test_prob=test_prob, test_margin=test_margin,
      metrics=metrics, train_logodds=train_logodds,
      test_logodds=test_logodds, dynamics=dynamics,
      heldout_probs=(outputs[width * k + _OUTPUTS][~mask] if heldout_probs
                     else None))
