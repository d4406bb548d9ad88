"""The prior of true effects the planner fits, and its check by the halves.

The true values (memorization of an example, influence of a pair) are
drawn from a prior g on GRID, fitted by maximum likelihood (EM) to the
estimates. Each estimate's standard error at a candidate true value comes
from its column's accuracy over all trials (`grid_stderr`), so that
estimates near 0 or 1, whose own variance is smallest, do not pull mass up.
`shrink_factor` checks g against the trials' two halves and `shrunk` keeps
what they confirm.
"""

import numpy as np

GRID = np.linspace(-1.0, 1.0, 101)
_FIT_SIZE = 10000
_CHECK_SIZE = 50000


def grid_stderr(accuracy, ratio, k):
  """[p, grid] standard errors of each column's estimate if its true value
  were each GRID value: the column's accuracy over all its trials is
  measured well, so a true value mu fixes p_out = accuracy - ratio mu and
  p_in = p_out + mu (kept in [0, 1]), and the estimate's variance at k is
  (p_in (1 - p_in) / ratio + p_out (1 - p_out) / (1 - ratio)) / k, each
  p (1 - p) at least 1 / (k + 2). A likelihood with this variance does not
  favour large values where estimates happen to sit near 0 or 1 (the
  estimate's own variance is smaller there)."""
  accuracy = np.asarray(accuracy, np.float64)[:, None]
  ratio = np.clip(np.asarray(ratio, np.float64), 0.02, 0.98)[:, None]
  mu = GRID[None, :]
  p_out = np.clip(accuracy - ratio * mu, np.maximum(0.0, -mu),
                  np.minimum(1.0, 1.0 - mu))
  p_in = p_out + mu
  floor = 1.0 / (k + 2.0)
  var = (np.maximum(p_in * (1 - p_in), floor) / ratio
         + np.maximum(p_out * (1 - p_out), floor) / (1 - ratio)) / k
  return np.sqrt(var)


def _stderr(stderr, model, keep):
  """The standard errors of the columns `keep`: [p, 1] from per-column
  ones, or [p, grid] from model = (accuracy, ratio, k) (grid_stderr)."""
  if model is not None:
    accuracy, ratio, k = model
    return np.maximum(grid_stderr(np.asarray(accuracy)[keep],
                                  np.asarray(ratio)[keep], k), 1e-3)
  return np.maximum(np.asarray(stderr)[keep], 1e-3)[:, None]


def fit_prior(estimate, stderr=None, iterations=100, model=None):
  """The prior g on GRID maximizing prod_i sum_g g N(x_i; mu_g, s_ig^2)
  (EM from uniform), s per column (`stderr`) or per column and grid value
  (`model`, grid_stderr)."""
  estimate = np.asarray(estimate)
  if not len(estimate):  # nothing to fit: every true value 0
    return np.eye(len(GRID))[int(np.argmin(np.abs(GRID)))]
  keep = np.arange(len(estimate))
  if len(estimate) > _FIT_SIZE:  # a fixed sample: the fit is of a density
    keep = np.random.default_rng(0x91).choice(len(estimate), _FIT_SIZE,
                                              replace=False)
  se = _stderr(stderr, model, keep)
  z = (estimate[keep][:, None] - GRID[None, :]) / se
  like = np.exp(-0.5 * z * z) / se
  g = np.full(len(GRID), 1.0 / len(GRID))
  for _ in range(iterations):
    post = like * g
    post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
    g = post.mean(axis=0)
  return g


def posterior(g, estimate, stderr=None, model=None):
  """[p, grid] posterior of each estimate's true value under prior g (the
  standard errors as in fit_prior)."""
  estimate = np.asarray(estimate)
  se = _stderr(stderr, model, np.arange(len(estimate)))
  z = (estimate[:, None] - GRID[None, :]) / se
  post = np.exp(-0.5 * z * z) / se * g[None, :]
  return post / np.maximum(post.sum(axis=1, keepdims=True), 1e-300)


def shrink_factor(g, halves, delta):
  """How much of the prior's mass above delta the halves confirm.

  g: the prior fitted on all the trials; halves: ((estimate, stderr) or
  (estimate, accuracy, ratio, k) of the even trials (posterior's stderr or
  model), the same of the odd), per column (a fixed sample of
  _CHECK_SIZE). For each direction,
  each column's posterior under g given one half's estimate gives the
  probability w of a value over delta and the posterior mean m: what the
  prior claims. The other half's estimate y is unbiased for the column's
  true value and independent of the first half given it, so that
  E[sum w y] = sum w m when g is right: alpha = sum w y / sum w m,
  clipped to [0, 1] and averaged over both directions.
  Mass that noise put over delta is not found in the other half (y ~ 0:
  alpha ~ 0); real effects are (alpha ~ 1). 1 when g claims nothing there
  (sum w < 1/2)."""
  alphas = []
  above = GRID > delta
  for a, b in ((0, 1), (1, 0)):
    est_a, rest = halves[a][0], halves[a][1:]
    est_b = halves[b][0]
    ok = np.isfinite(est_a) & np.isfinite(est_b)
    for column in rest[:2]:
      ok &= np.isfinite(column)
    ok = np.flatnonzero(ok)
    if len(ok) > _CHECK_SIZE:  # a fixed sample of the columns
      ok = np.sort(np.random.default_rng(0xC4).choice(ok, _CHECK_SIZE,
                                                      replace=False))
    if not len(ok):
      continue
    if len(rest) == 1:
      post = posterior(g, est_a[ok], rest[0][ok])
    else:
      post = posterior(g, est_a[ok], model=(rest[0][ok], rest[1][ok],
                                            rest[2]))
    w = post[:, above].sum(axis=1)
    if w.sum() < 0.5:
      continue
    claimed = float(np.sum(w * (post @ GRID)))
    found = float(np.sum(w * est_b[ok]))
    alphas.append(min(max(found / claimed, 0.0), 1.0) if claimed > 0
                  else 0.0)
  return float(np.mean(alphas)) if alphas else 1.0


def shrunk(g, alpha, delta):
  """The prior with its mass over delta scaled by alpha, the rest at 0."""
  g = np.array(g, np.float64)
  above = GRID > delta
  moved = g[above].sum() * (1.0 - alpha)
  g[above] *= alpha
  g[int(np.argmin(np.abs(GRID)))] += moved
  return g
