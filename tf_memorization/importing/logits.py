"""What a record keeps of a model's logits, computed as the trainer does.

    summarize(logits, labels) -> pred, prob, margin, logodds   (each [n])
    equivalent_logits(pred, prob, margin, logodds, labels, C) -> [n, C]

For logits z of one example with label y (training/inference.py computes
the same in the model's graph):

    pred     argmax_c z_c (the first largest, as numpy and Keras break ties)
    prob     softmax(z)_y
    margin   z_y − max_{c≠y} z_c
    logodds  z_y − log Σ_{c≠y} exp z_c    (log(prob / (1 − prob)), exact
                                           where a float16 prob is 1)

Computed in float64 a block of examples at a time, so any float16/32
logits give the same values as the model's float32 graph up to the
float16 rounding the record applies.

`equivalent_logits` goes the other way for an export (LiRA keeps logits,
a record keeps their summary): logits whose summary is the record's,
class for class where it matters (the true class at 0, the predicted
class, or the largest other one, at −margin, the rest equal, chosen so the
log-odds are the record's). LiRA's score.py computes exactly the log-odds
from them, so an exported and re-imported workdir estimates the same.
"""

import numpy as np

# Examples summarized at once: a few MB of float64 at C = 1,000.
BLOCK = 4096


def summarize(logits, labels, block=BLOCK):
  """(pred int32, prob, margin, logodds float32) of logits [n, C]."""
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  n, num_classes = logits.shape
  pred = np.empty(n, np.int32)
  prob, margin, logodds = (np.empty(n, np.float32) for _ in range(3))
  for start in range(0, n, block):
    part = slice(start, min(n, start + block))
    z = logits[part].astype(np.float64)
    y = labels[part].astype(np.int64)
    rows = np.arange(len(z))
    pred[part] = np.argmax(z, axis=1)
    true = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1)
    if num_classes > 1:
      rest = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    else:
      rest = np.full(len(z), -np.inf)
    margin[part] = true - top
    logodds[part] = true - rest
    # softmax_y = 1 / (1 + exp(rest - true)), stable for any gap.
    prob[part] = 1.0 / (1.0 + np.exp(rest - true))
  return pred, prob, margin, logodds


def equivalent_logits(pred, prob, margin, logodds, labels, num_classes):
  """float32 [n, C] logits whose summarize() is (pred, prob, margin,
  logodds) up to float rounding: z_y = 0, the runner-up (pred when it is
  wrong, else the first other class) at −margin, and the C − 2 others at
  one value v with logsumexp(others) = −logodds, so that softmax_y =
  sigmoid(logodds). The record's log-odds are used (not its prob): they
  keep the precision that a float16 prob near 1 loses."""
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  margin = np.asarray(margin, np.float64)
  logodds = np.maximum(np.asarray(logodds, np.float64), margin)  # L >= m
  pred = np.asarray(pred, np.int64)
  runner = np.where(pred != labels, pred, (labels + 1) % num_classes)
  z = np.empty((n, num_classes), np.float64)
  if num_classes > 2:
    # (C - 2) e^v = e^-L - e^-m, with both terms scaled by e^m (stable).
    gap = np.expm1(margin - logodds)  # e^(m-L) - 1 >= 0 in units of e^-m
    with np.errstate(divide='ignore'):
      v = -margin + np.log(gap / (num_classes - 2))
    # An exact tie (L == m) leaves the others at -inf: keep them far below.
    v = np.where(np.isfinite(v), v, -margin - 1e4)
    z[:] = v[:, None]
  rows = np.arange(n)
  z[rows, runner] = -margin
  z[rows, labels] = 0.0
  del prob  # the log-odds carry it (see the docstring)
  return z.astype(np.float32)
