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
# equivalent_logits: the other classes' distance below the runner-up
# (relative to the margin), so that float32 keeps the argmax.
_GAP = 1e-6


def summarize(logits, labels, block=BLOCK):
  """(pred int32, prob, margin, logodds float64) of logits [n, C] (float64:
  a record rounds them to float16 once)."""
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  n, num_classes = logits.shape
  pred = np.empty(n, np.int32)
  prob, margin, logodds = (np.empty(n, np.float64) for _ in range(3))
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
    # softmax_y = 1 / (1 + exp(rest - true)): exp overflows to inf for a
    # gap beyond ~709, where the probability is 0 (as it comes out).
    with np.errstate(over='ignore'):
      prob[part] = 1.0 / (1.0 + np.exp(rest - true))
  return pred, prob, margin, logodds


def equivalent_logits(pred, prob, margin, logodds, labels, num_classes):
  """float32 [n, C] logits whose summarize() is (pred, prob, margin,
  logodds) up to float rounding: z_y = 0, the runner-up (pred when it is
  wrong, else the first other class) at −margin, and the C − 2 others at
  one value v with logsumexp(others) = −logodds, so that softmax_y =
  sigmoid(logodds), with log-odds that round to the record's and whose
  sigmoid rounds to its prob (_consistent_logodds; prob None: the
  log-odds alone)."""
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  if num_classes == 2:  # one other class: the log-odds are the margin
    logodds = _consistent_logodds(prob, logodds, margin)
    margin = logodds
  else:
    # L <= m for any logits, and L >= m - log(1 + (C - 2) e^-gap) when the
    # C - 2 others stay `gap` below the runner-up (so that the prediction
    # is the record's): the margin moves within its rounding to make room.
    margin = np.asarray(margin, np.float16).astype(np.float64)
    m_low, m_high = _rounding_interval(margin)
    gap = _GAP * np.maximum(1.0, np.abs(margin))
    spread = np.log1p((num_classes - 2) * np.exp(-gap))
    logodds = np.clip(_consistent_logodds(prob, logodds, upper=m_high,
                                          lower=m_low - spread),
                      m_low - spread, m_high)
    # The margin within its rounding and within [L, L + spread].
    margin = np.clip(margin, np.maximum(m_low, logodds),
                     np.minimum(m_high, logodds + spread))
  pred = np.asarray(pred, np.int64)
  runner = np.where(pred != labels, pred, (labels + 1) % num_classes)
  z = np.empty((n, num_classes), np.float64)
  if num_classes > 2:
    # (C - 2) e^v = e^-L - e^-m, with both terms scaled by e^m (stable).
    gap = np.expm1(margin - logodds)  # e^(m-L) - 1 >= 0 in units of e^-m
    with np.errstate(divide='ignore'):
      v = -margin + np.log(gap / (num_classes - 2))
    # An exact tie (L == m) leaves the others at -inf: keep them far below;
    # and never level with the runner-up (argmax would pick the first).
    v = np.where(np.isfinite(v), v, -margin - 1e4)
    v = np.minimum(v, -margin - _GAP * np.maximum(1.0, np.abs(margin)))
    z[:] = v[:, None]
  rows = np.arange(n)
  # A margin of 0 is a tie the record's prediction broke: break it the same
  # way (the runner-up a hair above when it was predicted, else below).
  tie = np.where(pred != labels, 1e-30, -1e-30) * (margin == 0)
  z[rows, runner] = -margin + tie
  z[rows, labels] = 0.0
  return z.astype(np.float32)


def _rounding_interval(stored):
  """(low, high) float64: the values float16 rounds to `stored` (to the
  midpoints with its neighbours)."""
  stored = np.asarray(stored, np.float16)
  value = stored.astype(np.float64)
  below = np.nextafter(stored, np.float16(-np.inf)).astype(np.float64)
  above = np.nextafter(stored, np.float16(np.inf)).astype(np.float64)
  return (value + below) / 2, (value + above) / 2


def _logit(p):
  p = np.clip(p, 0.0, 1.0)
  with np.errstate(divide='ignore'):
    return np.log(p) - np.log1p(-p)


def _consistent_logodds(prob, logodds, margin=None, upper=np.inf,
                        lower=-np.inf):
  """float64 log-odds that round to the record's float16 `logodds` (and,
  given, `margin`: with two classes they are one number), within
  [`lower`, `upper`], and whose sigmoid rounds to its float16 `prob`: the middle of the intersection of
  their rounding intervals (both are roundings of one true value, so it
  is not empty but for double rounding, where the log-odds interval's
  point nearest the prob's logit is taken). Without `prob` (None): the
  log-odds as they are."""
  stored = np.asarray(logodds, np.float16)
  if prob is None:
    return stored.astype(np.float64)
  low, high = _rounding_interval(stored)
  if margin is not None:
    m_low, m_high = _rounding_interval(margin)
    low, high = np.maximum(low, m_low), np.minimum(high, m_high)
  low, high = np.maximum(low, lower), np.minimum(high, upper)
  p_low, p_high = _rounding_interval(prob)
  lo = np.maximum(low, _logit(p_low))
  hi = np.minimum(high, _logit(p_high))
  target = np.clip(_logit(np.asarray(prob, np.float64)), low, high)
  middle = np.where(lo <= hi, (lo + hi) / 2, target)
  return np.where(np.isfinite(middle), middle, target)
