r"""Estimator speed and memory at CIFAR-100 scale, against the floor and dense.

    python benchmarks/estimator_benchmark.py [--num_trials=2000]
        [--num_train=50000] [--num_test=10000] [--skip_dense]

Writes synthetic records (benchmarks/synthetic_records.py) once, then in
separate processes (so each peak RSS is its own):
  ours   the estimate binary; its influence top-k + pairs time comes from
         summary.json, its peak RSS from the OS;
  floor  one float32 matrix product of the same shapes ([n, k] @ [k, n_test]);
  dense  the straightforward way: the whole n x n_test influence matrix in
         float64, top-k by argsort, pairs by a mask over the matrix.
It checks that ours and dense find the same pairs and top-1 examples, and
prints a table with the ratios. Targets: ours / floor <= 2.0, RSS <= 3 GiB.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _child(code):
  """Runs `code` in a fresh python; returns (wall, peak RSS bytes, stdout)."""
  wrapper = ('import resource\n' + code +
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

OURS = '''
import json, os, sys
from tf_memorization import estimate
summary = estimate.run({workdir!r}, gin_bindings=['Estimator.split_half = False'],
                       log=lambda line: None)
print("TIMINGS", json.dumps(summary['timings']))
'''

DENSE = '''
import time, numpy as np
from tf_memorization import records
r = records.load({workdir!r}, margins=False)
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
  parser.add_argument('--num_trials', type=int, default=2000)
  parser.add_argument('--num_train', type=int, default=50_000)
  parser.add_argument('--num_test', type=int, default=10_000)
  parser.add_argument('--workdir', default=None,
                      help='Where the synthetic records go (reused).')
  parser.add_argument('--skip_dense', action='store_true')
  args = parser.parse_args()
  k, n, n_test = args.num_trials, args.num_train, args.num_test
  workdir = args.workdir or os.path.join(
      tempfile.gettempdir(), f'tf_memorization_bench_{k}_{n}_{n_test}')

  import synthetic_records  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  synthetic_records.make_records(workdir, k, n, n_test, log=None)
  print(f'records: {k} trials x {n} train / {n_test} test in {workdir} '
        f'(ready in {time.perf_counter() - start:.0f}s)', flush=True)

  _, ours_rss, stdout = _child(OURS.format(workdir=workdir))
  timings = json.loads(stdout.split('TIMINGS', 1)[1].splitlines()[0])
  ours = timings['influence_seconds']
  _, _, stdout = _child(FLOOR.format(n=n, k=k, n_test=n_test))
  floor = float(stdout.split('FLOOR_SECONDS', 1)[1].split()[0])

  rows = [
      ('influence top-k + pairs (ours)', f'{ours:.1f} s'),
      ('one float32 matmul, same shapes (floor)', f'{floor:.1f} s'),
      ('ratio ours / floor (target <= 2.0)', f'{ours / floor:.2f}'),
      ('load records (ours)', f'{timings["load_seconds"]:.1f} s'),
      ('memorization + stderr (ours)', f'{timings["memorization_seconds"]:.1f} s'),
      ('estimator peak RSS, whole binary (target <= 3 GiB)',
       f'{ours_rss / 2**30:.2f} GiB'),
  ]
  if not args.skip_dense:
    out = os.path.join(workdir, 'dense_check.npz')
    _, dense_rss, stdout = _child(DENSE.format(workdir=workdir, topk=10,
                                               out=out))
    dense = float(stdout.split('DENSE_SECONDS', 1)[1].split()[0])
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
  print(f'\nmachine: {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores, numpy {np.__version__}; k={k}, n={n}, '
        f'n_test={n_test}')
  width = max(len(r[0]) for r in rows)
  for name, value in rows:
    print(f'  {name.ljust(width)}  {value}')


if __name__ == '__main__':
  main()
