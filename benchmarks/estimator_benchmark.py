r"""Estimator speed and memory at CIFAR-100 scale, against the floor.

    python benchmarks/estimator_benchmark.py [--num_trials=4000]
        [--num_train=50000] [--num_test=10000] [--repeats=1]
        [--check_test=500] [--dense] [--workdir=DIR]

Writes synthetic records (benchmarks/synthetic_records.py) once, then in
separate processes (so each peak RSS is its own):
  ours   the estimate binary; its influence top-k + pairs time and its load
         time come from summary.json, its peak RSS (the whole binary, loading
         the records included) from the OS;
  floor  one float32 matrix product of the same shapes ([n, k] @ [k, n_test]);
  check  ours against an exact dense computation on a slice: the influence of
         every training example on the first --check_test test examples
         (which hold the planted pairs), from exact in/out counts in float64;
         top-k and pairs must match (default on: cheap at any k);
  dense  only with --dense: the straightforward way, the whole n x n_test
         influence matrix in float64 (k = 4,000: > 13 GiB and minutes), top-k
         by argsort, pairs by a mask over the matrix, checked against ours.
With --repeats=N, ours and the floor alternate N times and the best of each
counts (the machine may be shared). Both use numpy's BLAS with the same
threads (printed).

Targets: influence top-k + pairs (ours) / floor <= 1.5; peak RSS of the
estimate binary <= 3 GiB, loading the records included; loading (timed
separately) must not dominate. With every trust figure on (the defaults:
nested views, split halves, one planted null, the tests, the planner) the
time stays <= 2x the plain estimator's (split halves, null and planner
off), and the peak RSS <= 3 GiB.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # records import TF
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

TARGET_RATIO = 1.5
TARGET_RSS_GIB = 3.0
TARGET_TRUST_RATIO = 2.0  # every trust figure on / the plain estimator

# Prints the BLAS libraries and their threads (when threadpoolctl is there).
BLAS_INFO = '''
try:
  import threadpoolctl
  blas = [i for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']
  blas = [i for i in blas if 'numpy' in i['filepath']] or blas  # numpy's own
  print("BLAS", ", ".join(f"{i['internal_api']} {i.get('version')}: "
                          f"{i['num_threads']} threads" for i in blas))
except ImportError:
  print("BLAS unknown")
'''


def records_format():
  """The record format, so that a reused workdir is of this version's."""
  sys.path.insert(0, os.path.dirname(HERE))
  from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top
  return records.FORMAT_VERSION


def _child(code):
  """Runs `code` in a fresh python; returns (wall, peak RSS bytes, stdout)."""
  wrapper = ('import json, resource\n' + code + BLAS_INFO +
             '\nprint("MAXRSS_KB", resource.getrusage('
             'resource.RUSAGE_SELF).ru_maxrss)\n')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  start = time.perf_counter()
  result = subprocess.run([sys.executable, '-c', wrapper], capture_output=True,
                          text=True, env=env, check=False)
  wall = time.perf_counter() - start
  if result.returncode:
    raise RuntimeError(f'benchmark child failed:\n{result.stderr[-3000:]}')
  rss_kb = int(result.stdout.strip().splitlines()[-1].split()[1])
  return wall, rss_kb * 1024, result.stdout


def _value(stdout, key):
  return stdout.split(key, 1)[1].splitlines()[0].strip()


FLOOR = '''
import time, numpy as np
rng = np.random.default_rng(0)
a = (rng.random(({n}, {k})) < 0.7).astype(np.float32)
b = (rng.random(({k}, {n_test})) < 0.7).astype(np.float32)
a @ b[:, :16]  # warm up BLAS threads
start = time.perf_counter()
c = a @ b
print("FLOOR_SECONDS", time.perf_counter() - start)
'''

# The estimator as it was before the trust figures (one influence product,
# no split halves), and with every figure on (the defaults: the nested
# views and split halves from the same product, one planted null, the tests
# and the planner).
PLAIN = ['Estimator.split_half = False', 'Estimator.convergence = False',
         'Estimator.null_permutations = 0', 'Estimator.planner = False',
         'Estimator.report = False']
ALL_ON = ['Estimator.report = False']

OURS = '''
import os, sys
sys.path.insert(0, {repo!r})
from tf_memorization.estimation import pipeline
summary = pipeline.run({workdir!r}, gin_bindings={bindings!r},
                        log=lambda line: None)
print("TIMINGS", json.dumps(summary['timings']))
print("PAIRS", summary['num_pairs'])
'''

# Exact reference on a slice of test examples: integer in-counts (exact in
# float32 matmul, integers < 2**24), then the influence in float64 by the
# definition; compared with ours' top-k and pairs on those test examples.
CHECK = '''
import sys, time, numpy as np
sys.path.insert(0, {repo!r})
from tf_memorization.workdir import loading
from tf_memorization.workdir import records
r = loading.load({workdir!r}, margins=False)
start = time.perf_counter()
cols = slice(0, {num_check})
m, c, t = r.masks, r.train_correct, r.test_correct[:, cols]
k = m.shape[0]
k_in = m.sum(0).astype(np.float64)
k_out = k - k_in
in_c = np.count_nonzero(m & c, axis=0)
mem = in_c / k_in - (c.sum(0) - in_c) / k_out
t32 = t.astype(np.float32)
t_sum = t.sum(0).astype(np.float64)
infl = np.empty((m.shape[1], t.shape[1]))
for s in range(0, m.shape[1], 4096):
  counts = (m[:, s:s + 4096].T.astype(np.float32) @ t32).astype(np.float64)
  infl[s:s + 4096] = (counts / k_in[s:s + 4096, None]
                      - (t_sum - counts) / k_out[s:s + 4096, None])
keep = (infl >= {threshold}) & (mem >= {mem_threshold})[:, None] & (
    r.train_labels[:, None] == r.test_labels[None, cols])
rows, pcols = np.nonzero(keep)
dense_pairs = set(zip(rows.tolist(), pcols.tolist()))
ours_pairs = np.loadtxt({pairs_csv!r}, delimiter=',', skiprows=1,
                        usecols=(0, 1), dtype=np.int64, ndmin=2)
ours_pairs = set((i, j) for i, j in ours_pairs.tolist() if j < {num_check})
topk = np.load({topk_npz!r})
idx = topk['train_indices'][cols]
val = topk['influence'][cols].astype(np.float64)
ref_sorted = -np.sort(-infl, axis=0)[:idx.shape[1]].T
# Up to ties: ours' values are the exact top-k values (to float32 rounding),
# and the exact influence at ours' indices is those values.
values_ok = np.abs(val - ref_sorted).max() <= 1e-5
at_idx = np.take_along_axis(infl.T, idx, axis=1)
indices_ok = np.abs(at_idx - val).max() <= 1e-5
top1_same = float(np.mean(idx[:, 0] == np.argmax(infl, axis=0)))
print("CHECK", json.dumps({{
    'num_test': int(t.shape[1]), 'pairs_ours': len(ours_pairs),
    'pairs_dense': len(dense_pairs), 'pairs_identical': ours_pairs == dense_pairs,
    'topk_exact_up_to_ties': bool(values_ok and indices_ok),
    'top1_same_index': top1_same,
    'seconds': time.perf_counter() - start}}))
'''

DENSE = '''
import sys, time, numpy as np
sys.path.insert(0, {repo!r})
from tf_memorization.workdir import records
r = loading.load({workdir!r}, margins=False)
start = time.perf_counter()
m = r.masks.astype(np.float64)
t = r.test_correct.astype(np.float64)
k_in = m.sum(0)
k_out = m.shape[0] - k_in
mem = (m * r.train_correct).sum(0) / k_in - ((1 - m) * r.train_correct).sum(0) / k_out
infl = (m.T @ t) / k_in[:, None] - ((1 - m).T @ t) / k_out[:, None]
top = np.argsort(-infl, axis=0)[:{topk}].T
keep = (infl >= 0.15) & (mem >= 0.25)[:, None] & (
    r.train_labels[:, None] == r.test_labels[None, :])
rows, cols = np.nonzero(keep)
print("DENSE_SECONDS", time.perf_counter() - start)
np.savez({out!r}, rows=rows, cols=cols, top1=top[:, 0])
'''


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_trials', type=int, default=4000)
  parser.add_argument('--num_train', type=int, default=50_000)
  parser.add_argument('--num_test', type=int, default=10_000)
  parser.add_argument('--workdir', default=None,
                      help='Where the synthetic records go (reused).')
  parser.add_argument('--repeats', type=int, default=1,
                      help='Alternate ours and the floor this many times; '
                      'the best of each counts.')
  parser.add_argument('--check_test', type=int, default=500,
                      help='Check ours against an exact dense computation on '
                      'this many test examples (0: no check).')
  parser.add_argument('--dense', action='store_true',
                      help='Also run the full dense float64 baseline (k=4000: '
                      '> 13 GiB, minutes).')
  parser.add_argument('--skip_dense', action='store_true',
                      help='No full dense baseline (the default; kept for old '
                      'command lines; overrides --dense).')
  args = parser.parse_args()
  k, n, n_test = args.num_trials, args.num_train, args.num_test
  repo = os.path.dirname(HERE)
  workdir = args.workdir or os.path.join(
      tempfile.gettempdir(),
      f'tf_memorization_bench_v{records_format()}_{k}_{n}_{n_test}')
  load_average = [os.getloadavg()[0]]

  import synthetic_records  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  synthetic_records.make_records(workdir, k, n, n_test, log=None)
  print(f'records: {k} trials x {n} train / {n_test} test in {workdir} '
        f'(ready in {time.perf_counter() - start:.0f}s)', flush=True)

  ours_runs, floor_runs, trust_runs = [], [], []
  for _ in range(max(1, args.repeats)):
    _, rss, stdout = _child(OURS.format(repo=repo, workdir=workdir,
                                        bindings=PLAIN))
    ours_runs.append((json.loads(_value(stdout, 'TIMINGS')), rss,
                      _value(stdout, 'BLAS')))
    print(f'  ours: {ours_runs[-1][0]["influence_seconds"]:.1f} s', flush=True)
    _, rss, stdout = _child(OURS.format(repo=repo, workdir=workdir,
                                        bindings=ALL_ON))
    timings = json.loads(_value(stdout, 'TIMINGS'))
    trust_runs.append((timings['influence_seconds']
                       + timings.get('planner_seconds', 0.0), rss, timings))
    print(f'  ours, every trust figure on: {trust_runs[-1][0]:.1f} s',
          flush=True)
    _, _, stdout = _child(FLOOR.format(n=n, k=k, n_test=n_test))
    floor_runs.append((float(_value(stdout, 'FLOOR_SECONDS')),
                       _value(stdout, 'BLAS')))
    print(f'  floor: {floor_runs[-1][0]:.1f} s', flush=True)
  load_average.append(os.getloadavg()[0])
  best = min(ours_runs, key=lambda r: r[0]['influence_seconds'])
  timings, ours_rss = best[0], max(r[1] for r in ours_runs)
  ours = timings['influence_seconds']
  load = timings['load_seconds']
  floor = min(f for f, _ in floor_runs)
  best_of = f' (best of {len(ours_runs)})' if len(ours_runs) > 1 else ''
  ratio, rss_gib = ours / floor, ours_rss / 2**30
  rows = [
      ('influence top-k + pairs (ours)' + best_of, f'{ours:.2f} s'),
      ('one float32 matmul, same shapes (floor)' + best_of, f'{floor:.2f} s'),
      (f'ratio ours / floor (target <= {TARGET_RATIO})',
       f'{ratio:.2f}  ' + ('met' if ratio <= TARGET_RATIO else 'MISSED')),
      ('load records (ours), timed separately', f'{load:.2f} s  '
       f'({load / (load + ours):.0%} of load + influence)'),
      ('ratio (load + influence) / floor', f'{(load + ours) / floor:.2f}'),
      ('memorization + stderr (ours)',
       f'{timings["memorization_seconds"]:.2f} s'),
      (f'estimator peak RSS, whole binary incl. load (target <= '
       f'{TARGET_RSS_GIB:g} GiB)', f'{rss_gib:.2f} GiB  ' +
       ('met' if rss_gib <= TARGET_RSS_GIB else 'MISSED')),
  ]
  trust = min(trust_runs, key=lambda r: r[0])
  trust_ratio = trust[0] / ours
  trust_rss = max(r[1] for r in trust_runs) / 2**30
  rows += [
      ('every trust figure on: influence views + null + tests + planner',
       f'{trust[0]:.2f} s (planner '
       f'{trust[2].get("planner_seconds", 0.0):.2f} s)'),
      (f'ratio trust on / plain estimator (target <= {TARGET_TRUST_RATIO:g})',
       f'{trust_ratio:.2f}  ' + ('met' if trust_ratio <= TARGET_TRUST_RATIO
                                 else 'MISSED')),
      (f'peak RSS with every trust figure on (target <= '
       f'{TARGET_RSS_GIB:g} GiB)', f'{trust_rss:.2f} GiB  ' +
       ('met' if trust_rss <= TARGET_RSS_GIB else 'MISSED'))]
  if len(ours_runs) > 1:
    rows += [('all runs ours / floor', ', '.join(
        f'{o[0]["influence_seconds"]:.1f}/{f:.1f}'
        for o, (f, _) in zip(ours_runs, floor_runs)))]
  rows += [('BLAS threads ours / floor', f'{best[2]} / {floor_runs[0][1]}')]

  if args.check_test > 0:
    estimates = os.path.join(workdir, 'estimates')
    _, _, stdout = _child(CHECK.format(
        repo=repo, workdir=workdir, num_check=min(args.check_test, n_test),
        threshold=0.15, mem_threshold=0.25,
        pairs_csv=os.path.join(estimates, 'influence_pairs.csv'),
        topk_npz=os.path.join(estimates, 'influence_topk.npz')))
    check = json.loads(_value(stdout, 'CHECK'))
    rows += [
        (f'exact check on test[:{check["num_test"]}]: pairs identical',
         f'{check["pairs_identical"]} ({check["pairs_ours"]} ours, '
         f'{check["pairs_dense"]} exact)'),
        ('exact check: top-k values and indices (up to ties)',
         str(check['topk_exact_up_to_ties'])),
        ('exact check: top-1 same index (ties may differ)',
         f'{check["top1_same_index"]:.3f}')]

  if args.dense and not args.skip_dense:
    out = os.path.join(workdir, 'dense_check.npz')
    _, dense_rss, stdout = _child(DENSE.format(repo=repo, workdir=workdir,
                                               topk=10, out=out))
    dense = float(_value(stdout, 'DENSE_SECONDS'))
    rows += [('dense float64 baseline', f'{dense:.1f} s'),
             ('dense peak RSS', f'{dense_rss / 2**30:.2f} GiB'),
             ('speed-up ours vs dense', f'{dense / ours:.1f}x')]
    check = np.load(out)
    ours_pairs = np.loadtxt(os.path.join(workdir, 'estimates',
                                         'influence_pairs.csv'),
                            delimiter=',', skiprows=1, usecols=(0, 1),
                            dtype=np.int64, ndmin=2)
    same_pairs = (set(map(tuple, ours_pairs.tolist())) ==
                  set(zip(check['rows'].tolist(), check['cols'].tolist())))
    topk = np.load(os.path.join(workdir, 'estimates', 'influence_topk.npz'))
    top1_agree = float(np.mean(topk['train_indices'][:, 0] == check['top1']))
    rows += [('pairs identical to dense', str(same_pairs)),
             ('top-1 agreement with dense (ties may differ)',
              f'{top1_agree:.3f}')]
  print(f'\nmachine: {platform.machine()}, {os.cpu_count()} cores, '
        f'{common.cpu_model()}; numpy {np.__version__}, python '
        f'{platform.python_version()}; load average {load_average[0]:.1f} '
        f'before, {load_average[1]:.1f} after the timed runs')
  print(f'k={k}, n={n}, n_test={n_test}')
  width = max(len(r[0]) for r in rows)
  for name, value in rows:
    print(f'  {name.ljust(width)}  {value}')


if __name__ == '__main__':
  main()
