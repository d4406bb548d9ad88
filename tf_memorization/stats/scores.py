"""Memorization, influence, their standard errors and consistency scores.

Notation (Feldman & Zhang 2020): k trials; mask M[t, i] = 1 when training
example i is in trial t's subset; C[t, i] the correctness (or a soft score) of
trial t's model on training example i; T[t, j] the same on test example j.
k_in(i) = sum_t M[t, i], k_out(i) = k - k_in(i).

    memorization  mem(i)     = mean_{t: M=1} C[t, i] - mean_{t: M=0} C[t, i]
    influence     infl(i, j) = mean_{t: M[t,i]=1} T[t, j]
                             - mean_{t: M[t,i]=0} T[t, j]
    consistency   cs(i)      = mean_{t: M=0} C[t, i]   (held-out accuracy)

Each score is a difference of two means over disjoint sets of trials, so its
standard error is sqrt(v_in / k_in + v_out / k_out), with v the (population)
variance of the values averaged: p(1 - p) for 0/1 correctness, the empirical
variance for soft scores. An example with k_in = 0 or k_out = 0 has no
estimate: NaN, counted by the caller, never a biased number.

All influences are one matrix product per block of training examples:
with W[t, i] = M[t, i] / k_in(i) - (1 - M[t, i]) / k_out(i),

    infl_block = W_blockᵀ T            (float32, [b, n_test]),

so the n x n_test matrix (CIFAR-100: 50,000 x 10,000) is never held in float64:
each block is reduced to what users read (top-k per test example, pairs over
thresholds) and optionally written to a float16 memory-mapped .npy.
"""

import dataclasses
import math

import numpy as np

from tf_memorization.stats import bits
from tf_memorization.stats import blocks


def _safe_divide(numerator, denominator):
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1),
                    np.nan)


def difference_stderr(var_in, k_in, var_out, k_out):
  """sqrt(v_in / k_in + v_out / k_out): the standard error of a difference of
  two means over k_in and k_out independent values of variances v_in and
  v_out (NaN where a count is 0). Arrays, or scalars (a float back)."""
  stderr = np.sqrt(_safe_divide(var_in, k_in) + _safe_divide(var_out, k_out))
  return float(stderr) if np.ndim(stderr) == 0 else stderr


def difference_of_means(masks, values, chunk=2048):
  """Per column: mean over in-trials minus mean over out-trials, with stderr.

  Args:
    masks: bool [k, n] (or a bits.BitMatrix).
    values: [k, n] 0/1 correctness or soft scores (or anything read a
      block of columns at a time, bits.as_columns).
    chunk: columns processed at a time (bounds the temporaries: a few
      [k, chunk] arrays; the sums run down the trials, so the result does not
      depend on it).

  Returns:
    dict of float64 [n] arrays: estimate, stderr, mean_in, mean_out, and
    int arrays k_in, k_out. NaN where k_in or k_out is 0.
  """
  masks = bits.as_bool(masks)
  if masks.shape != np.shape(values):
    raise ValueError(f'masks {masks.shape} and values {np.shape(values)} '
                     'differ.')
  values = bits.as_columns(values)
  k, n = masks.shape
  sums = np.zeros((4, n))  # sum_in, sq_in, sum_all, sq_all
  if values.dtype == bool:
    # 0/1 values: the sums are counts (and v * v = v), exact as integers, so
    # the same float64 numbers come out without float64 temporaries.
    for start in range(0, n, chunk):
      m = masks[:, start:start + chunk]
      v = values[:, start:start + chunk]
      sums[0, start:start + chunk] = np.count_nonzero(m & v, axis=0)
      sums[2, start:start + chunk] = np.count_nonzero(v, axis=0)
    sums[1], sums[3] = sums[0], sums[2]
  else:
    for start in range(0, n, chunk):
      m = masks[:, start:start + chunk]
      v = np.asarray(values[:, start:start + chunk], np.float64)
      v_in = np.where(m, v, 0.0)
      sums[0, start:start + chunk] = v_in.sum(axis=0)
      sums[1, start:start + chunk] = (v_in * v).sum(axis=0)
      sums[2, start:start + chunk] = v.sum(axis=0)
      sums[3, start:start + chunk] = (v * v).sum(axis=0)
  sum_in, sq_in, sum_all, sq_all = sums
  k_in = masks.sum(axis=0)
  k_out = k - k_in
  mean_in = _safe_divide(sum_in, k_in)
  mean_out = _safe_divide(sum_all - sum_in, k_out)
  var_in = np.maximum(_safe_divide(sq_in, k_in) - np.square(mean_in), 0.0)
  var_out = np.maximum(_safe_divide(sq_all - sq_in, k_out)
                       - np.square(mean_out), 0.0)
  stderr = difference_stderr(var_in, k_in, var_out, k_out)
  return {'estimate': mean_in - mean_out, 'stderr': stderr,
          'mean_in': mean_in, 'mean_out': mean_out,
          'k_in': k_in.astype(np.int64), 'k_out': k_out.astype(np.int64)}


@dataclasses.dataclass
class Memorization:
  """Per training example (all [n])."""
  memorization: np.ndarray
  stderr: np.ndarray
  soft: np.ndarray            # with true-class probability for correctness
  soft_stderr: np.ndarray
  consistency: np.ndarray     # held-out accuracy (C-score)
  k_in: np.ndarray
  k_out: np.ndarray

  @property
  def num_undefined(self):
    return int(np.isnan(self.memorization).sum())


def memorization(masks, correct, soft_scores=None):
  """The paper's memorization estimate, its stderr, soft variant and C-score.

  Args:
    masks: bool [k, n].
    correct: bool [k, n] correctness on the training examples.
    soft_scores: optional [k, n] true-class probabilities.
  """
  hard = difference_of_means(masks, correct)
  if soft_scores is not None:
    soft = difference_of_means(masks, soft_scores)
  else:
    soft = {'estimate': np.full_like(hard['estimate'], np.nan),
            'stderr': np.full_like(hard['estimate'], np.nan)}
  return Memorization(memorization=hard['estimate'], stderr=hard['stderr'],
                      soft=soft['estimate'], soft_stderr=soft['stderr'],
                      consistency=hard['mean_out'], k_in=hard['k_in'],
                      k_out=hard['k_out'])


def lemma_2_1_bound(num_trials, subset_ratio):
  """Bound on E[(estimate - true)^2] from the paper's Lemma 2.1.

  1/(p k) + 1/((1 - p) k) + exp(-p k / 16) / 2 with p = min(r, 1 - r).
  """
  p = min(subset_ratio, 1.0 - subset_ratio)
  k = float(num_trials)
  return 1.0 / (p * k) + 1.0 / ((1.0 - p) * k) + math.exp(-p * k / 16.0) / 2.0


@dataclasses.dataclass
class InfluenceResult:
  """What the blocked influence pass keeps."""
  topk_indices: np.ndarray    # int64 [n_test, topk] train indices, best first
  topk_influence: np.ndarray  # float32 [n_test, topk]
  pair_train: np.ndarray      # int64 [p] train index of each kept pair
  pair_test: np.ndarray       # int64 [p]
  pair_influence: np.ndarray  # float32 [p]
  pair_stderr: np.ndarray     # float32 [p]
  max_influence: np.ndarray   # float32 [n] largest influence on any test example


# Margin below a pair threshold within which float32 candidates are re-checked
# in float64 (float32 influence is exact to ~1e-6).
PAIR_SLACK = 1e-4


def influence_weights(masks_block):
  """W with infl_block = Wᵀ T: one matrix product and no element-wise pass.

  W[t, i] = M[t, i] / k_in(i) - (1 - M[t, i]) / k_out(i), so that
  (Wᵀ T)[i, j] = mean_{in} T[., j] - mean_{out} T[., j]. Columns of examples
  with k_in = 0 or k_out = 0 are zero; `defined` marks the others.

  Args:
    masks_block: bool [k, b].

  Returns:
    (W float32 [k, b], defined bool [b]).
  """
  k = masks_block.shape[0]
  k_in = masks_block.sum(axis=0)
  k_out = k - k_in
  defined = (k_in > 0) & (k_out > 0)
  inv_in = np.where(defined, 1.0 / np.maximum(k_in, 1), 0.0).astype(np.float32)
  inv_out = np.where(defined, 1.0 / np.maximum(k_out, 1), 0.0).astype(np.float32)
  # M * (1/k_in + 1/k_out) - 1/k_out, built in place in float32 (the same
  # numbers as np.where(M, inv_in + inv_out, 0) - inv_out, one pass fewer).
  weights = masks_block.astype(np.float32)
  weights *= inv_in + inv_out
  weights -= inv_out
  return weights, defined


def pair_statistics(masks, test_values, pair_train, pair_test, chunk=1024,
                    full=False):
  """Influence and its standard error for the given (train, test) pairs.

  Computed directly from the trials (k values per pair), so the standard
  error costs nothing for the pairs nobody keeps.

  Returns:
    (influence, stderr) float64 [p]; with full=True a dict that also holds
    mean_in, mean_out, the population variances var_in, var_out and the
    counts k_in, k_out.
  """
  k = masks.shape[0]
  p = len(pair_train)
  out = {name: np.empty(p) for name in ('estimate', 'stderr', 'mean_in',
                                        'mean_out', 'var_in', 'var_out',
                                        'k_in', 'k_out')}
  for start in range(0, p, chunk):
    rows = pair_train[start:start + chunk]
    cols = pair_test[start:start + chunk]
    m = masks[:, rows]
    t = test_values[:, cols].astype(np.float64)
    k_in = m.sum(axis=0)
    k_out = k - k_in
    in_sum = np.where(m, t, 0.0).sum(axis=0)
    in_sq = np.where(m, t * t, 0.0).sum(axis=0)
    all_sum, all_sq = t.sum(axis=0), (t * t).sum(axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
      mean_in, mean_out = in_sum / k_in, (all_sum - in_sum) / k_out
      var_in = np.maximum(in_sq / k_in - mean_in ** 2, 0.0)
      var_out = np.maximum((all_sq - in_sq) / k_out - mean_out ** 2, 0.0)
    part = slice(start, start + chunk)
    out['estimate'][part] = mean_in - mean_out
    out['stderr'][part] = difference_stderr(var_in, k_in, var_out, k_out)
    for name, value in (('mean_in', mean_in), ('mean_out', mean_out),
                        ('var_in', var_in), ('var_out', var_out),
                        ('k_in', k_in), ('k_out', k_out)):
      out[name][part] = value
  return out if full else (out['estimate'], out['stderr'])


def pair_family(memorization_values, memorization_threshold, train_labels,
                test_labels, same_label):
  """(candidate rows bool [n], label arrays): the pairs tested are those of a
  training example with memorization >= the threshold and (same_label) a
  test example of its label."""
  return (np.asarray(memorization_values) >= memorization_threshold,
          np.asarray(train_labels), np.asarray(test_labels), same_label)


def family_size(family):
  """The number of (train, test) pairs in the family."""
  candidates, train_labels, test_labels, same_label = family
  if not same_label:
    return int(candidates.sum()) * len(test_labels)
  counts = dict(zip(*np.unique(test_labels, return_counts=True)))
  return int(sum(counts.get(label, 0) for label in train_labels[candidates]))


def select_pairs(block, index, cols, threshold, defined, family):
  """(rows, cols), local to the block, of its entries >= threshold in the
  family; float32 slack, re-checked exactly by the caller. `index`: the
  training index of each row; `cols`: the test index of each column (None:
  all)."""
  candidates, train_labels, test_labels, same_label = family
  rows, local_cols = blocks.nonzero_2d(block >= threshold - PAIR_SLACK)
  train = index[rows]
  keep = defined[rows] & candidates[train]
  if same_label:
    test = local_cols if cols is None else cols[local_cols]
    keep &= train_labels[train] == test_labels[test]
  return rows[keep], local_cols[keep]


def concat_indices(parts):
  return (np.concatenate(parts) if parts else np.zeros(0)).astype(np.int64)


def exact_pairs(masks, test_values, rows, cols, threshold):
  """The pairs whose float64 influence meets the threshold, with stderr."""
  value, stderr = pair_statistics(masks, test_values, rows, cols)
  exact = value >= threshold
  return (rows[exact], cols[exact], value[exact].astype(np.float32),
          stderr[exact].astype(np.float32))


def influence(masks, test_correct, train_labels, test_labels,
              memorization_values, topk=10, influence_threshold=0.15,
              memorization_threshold=0.25, same_label=True, block_size=2048,
              dense_path=None, progress=None, scope='all'):
  """Blocked influence: top-k per test example and pairs over thresholds.

  Args:
    masks: bool [k, n].
    test_correct: bool [k, n_test] (or soft scores in [0, 1]).
    train_labels, test_labels: int [n], [n_test].
    memorization_values: float [n], for the pair filter.
    topk: training examples kept per test example.
    influence_threshold: pairs need infl >= this.
    memorization_threshold: pairs need mem(train example) >= this.
    same_label: pairs need equal labels (the paper's filter).
    block_size: training examples per matrix product.
    dense_path: if set, also write the dense float16 [n, n_test] matrix there
      as a memory-mapped .npy (NaN rows for undefined examples; scope 'all').
    progress: optional callable(done, total) after each block.
    scope: 'all' or 'same_label' (blocks.py: which pairs are computed; the
      top-k and the largest influences are then within each class).

  Returns:
    An InfluenceResult.
  """
  masks = np.asarray(masks, bool)
  k, n = masks.shape
  test_values = np.asarray(test_correct, np.float32)
  n_test = test_values.shape[1]
  topk = max(0, min(int(topk), n))
  family = pair_family(memorization_values, memorization_threshold,
                       train_labels, test_labels, same_label)
  reducer = blocks.Reducer(n, n_test, topk, dense_path)
  pair_rows, pair_cols = [], []
  done = 0
  for take, index, cols in blocks.blocks(train_labels, test_labels,
                                         block_size, scope):
    weights, defined = influence_weights(masks[:, take])
    values = test_values if cols is None else test_values[:, cols]
    block = weights.T @ values                             # [b, m]
    # float32 products can land a hair below a threshold the exact value
    # meets (3/4 - 3/5 = 0.15); candidates are re-checked exactly below.
    rows, local = select_pairs(block, index, cols, influence_threshold,
                               defined, family)
    pair_rows.append(index[rows])
    pair_cols.append(local if cols is None else cols[local])
    reducer.add(block, take, index, cols, defined)
    done += len(index)
    if progress is not None:
      progress(done, n)
  if progress is not None and done < n:  # classes without test examples
    progress(n, n)
  reducer.finish()
  pair_train, pair_test, pair_influence, pair_stderr = exact_pairs(
      masks, test_values, concat_indices(pair_rows), concat_indices(pair_cols),
      influence_threshold)
  return InfluenceResult(
      topk_indices=reducer.best_idx, topk_influence=reducer.best_val,
      pair_train=pair_train, pair_test=pair_test,
      pair_influence=pair_influence, pair_stderr=pair_stderr,
      max_influence=reducer.max_influence)


def jaccard(pairs_a, pairs_b):
  """Jaccard index of two sets of (train, test) pairs (1.0 if both empty)."""
  a, b = set(pairs_a), set(pairs_b)
  if not a and not b:
    return 1.0
  return len(a & b) / len(a | b)


def pair_keys(train, test):
  """One int64 per (train, test) pair, sorted and distinct: the pairs as
  arrays (8 bytes a pair) where a set of tuples would take ~200."""
  return np.unique((np.asarray(train, np.int64) << 32)
                   | np.asarray(test, np.int64))


def jaccard_keys(keys_a, keys_b):
  """jaccard of two sets given as arrays of keys (pair_keys, or example
  indices): 1.0 if both are empty."""
  a, b = np.unique(keys_a), np.unique(keys_b)
  if not len(a) and not len(b):
    return 1.0
  both = len(np.intersect1d(a, b, assume_unique=True))
  return both / (len(a) + len(b) - both)


def mean_std(values):
  """(mean, sample standard deviation) of `values`: std 0 for one value,
  both NaN for none."""
  values = np.asarray(values, np.float64)
  if not len(values):
    return float('nan'), float('nan')
  return float(values.mean()), float(values.std(ddof=1) if len(values) > 1
                                     else 0.0)


def roc(scores_, positive):
  """ROC curve and its area of `scores_` as a detector of `positive`.

  scikit-learn's roc_curve with a point at every distinct score (none
  dropped), from (0, 0); ties share their point, so the area is the
  probability that a positive scores above a negative, ties counting half
  (the Mann-Whitney statistic).

  Args:
    scores_: float [m], higher = more likely positive.
    positive: bool [m].

  Returns:
    (auc, fpr, tpr): a float (NaN without positives or negatives) and two
    lists of floats.
  """
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  positive = np.asarray(positive, bool)
  if positive.all() or not positive.any():
    return float('nan'), [], []
  fpr, tpr, _ = metrics.roc_curve(positive, scores_, drop_intermediate=False)
  auc = metrics.roc_auc_score(positive, scores_)
  return float(auc), [float(v) for v in fpr], [float(v) for v in tpr]
