r"""What checking every record costs at load time, against loading unchecked.

    python benchmarks/load_benchmark.py [--num_trials=1000]
        [--num_train=50000] [--num_test=10000] [--repeats=3] [--workdir=DIR]

Writes synthetic records once (benchmarks/synthetic_records.py: CIFAR-100
sized, the paper's independent design), then times, on the same files with a
warm page cache, best of --repeats:

  unchecked   the loader as it was before records were range-checked: read
              each file, verify the sha256 of its arrays, unpack the mask
              and correctness into the [k, n] arrays (one thread);
  ours        loading.load(margins=False), as the estimator calls it: the
              sha256 over arrays and metadata, the dataset, fingerprint,
              mask and seed (the design's mask of trial t is drawn again)
              and value checks, then the same unpacking;
  threaded    the same with loading.load(threads=--threads).

and the parts of the checks alone: drawing the design's masks, and the value
checks (min/max of every array). Target: the range checks cost <= 10% of the
unchecked load; drawing every mask again is the price of checking that each
record is the trial it claims to be, reported beside it.
"""

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # records import TF
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import synthetic_records  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.core import storage  # pylint: disable=g-import-not-at-top
from tf_memorization.stats import masks  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top
from tf_memorization.workdir import record_checks  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.workdir import signatures  # pylint: disable=g-import-not-at-top,wrong-import-position

TARGET = 1.10


def load_unchecked(workdir):
  """The loader before range checks: checksum of the arrays, then unpack."""
  dataset, _ = records.read_dataset_file(workdir)
  train_labels, test_labels = dataset['train_labels'], dataset['test_labels']
  n, n_test = len(train_labels), len(test_labels)
  found = records.list_records(workdir)
  k = len(found)
  out = {'masks': np.zeros((k, n), bool),
         'train_correct': np.zeros((k, n), bool),
         'test_correct': np.zeros((k, n_test), bool),
         'train_prob': np.zeros((k, n), np.float16),
         'test_prob': np.zeros((k, n_test), np.float16)}
  train_cast = test_cast = None
  for row, path in enumerate(found.values()):
    payload = storage.read_bytes(path)
    arrays = storage.npz_views(payload, unchecked=records.CORE_FIELDS)
    records._json_field(path, arrays, 'metadata')  # pylint: disable=protected-access
    signatures.arrays_digest(arrays)
    if train_cast is None:
      train_cast = train_labels.astype(arrays['train_pred'].dtype)
      test_cast = test_labels.astype(arrays['test_pred'].dtype)
    out['masks'][row] = np.unpackbits(arrays['mask'], count=n).view(bool)
    out['train_correct'][row] = arrays['train_pred'] == train_cast
    out['test_correct'][row] = arrays['test_pred'] == test_cast
    out['train_prob'][row] = arrays['train_prob']
    out['test_prob'][row] = arrays['test_prob']
  return out


def best_of(repeats, fn):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return min(times), result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_trials', type=int, default=1000)
  parser.add_argument('--num_train', type=int, default=50_000)
  parser.add_argument('--num_test', type=int, default=10_000)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--workdir', default=None)
  parser.add_argument('--threads', type=int, default=2,
                      help='loading.load(threads=...) for the threaded row.')
  args = parser.parse_args()
  k, n, n_test = args.num_trials, args.num_train, args.num_test
  workdir = args.workdir or os.path.join(
      tempfile.gettempdir(),
      f'tf_memorization_bench_v{records.FORMAT_VERSION}_{k}_{n}_{n_test}')
  start = time.perf_counter()
  synthetic_records.make_records(workdir, k, n, n_test, log=None)
  print(f'records: {k} trials x {n} train / {n_test} test in {workdir} '
        f'(ready in {time.perf_counter() - start:.0f}s)', flush=True)
  load_unchecked(workdir)  # warms the page cache for every variant

  unchecked, plain = best_of(args.repeats, lambda: load_unchecked(workdir))
  ours, loaded = best_of(args.repeats,
                         lambda: loading.load(workdir, margins=False))
  threaded, _ = best_of(args.repeats, lambda: loading.load(
      workdir, margins=False, threads=args.threads))
  for name in ('masks', 'train_correct', 'test_correct', 'train_prob'):
    np.testing.assert_array_equal(getattr(loaded, name), plain[name],
                                  err_msg=name)

  design = masks.SubsetDesign(**loaded.metadata[0]['design'], num_trials=k)
  draw, _ = best_of(1, lambda: [design.mask(n, t) for t in range(k)])
  found = list(records.list_records(workdir).values())

  def value_checks():
    for path in found[:200]:
      arrays, _ = records._parse_record(path, storage.read_bytes(path))  # pylint: disable=protected-access
      record_checks.check_values(path, arrays, 100)

  def parse_only():
    for path in found[:200]:
      records._parse_record(path, storage.read_bytes(path))  # pylint: disable=protected-access

  with_values, _ = best_of(args.repeats, value_checks)
  parsing, _ = best_of(args.repeats, parse_only)
  values = (with_values - parsing) * len(found) / 200

  value_ratio = (unchecked + values) / unchecked
  rows = [
      ('unchecked loader (before range checks)', f'{unchecked:.2f} s'),
      ('ours: every check (loading.load, 1 thread)', f'{ours:.2f} s'),
      ('ratio ours / unchecked', f'{ours / unchecked:.2f}'),
      (f'ours on {args.threads} threads', f'{threaded:.2f} s '
       f'({threaded / unchecked:.2f} x unchecked)'),
      ('  of which: drawing the design\'s masks again',
       f'{draw:.2f} s ({draw / unchecked:.0%} of unchecked)'),
      ('  of which: value checks (min/max of every array)',
       f'{values:.2f} s ({values / unchecked:.0%} of unchecked)'),
      (f'range checks alone: (unchecked + values) / unchecked (target <= '
       f'{TARGET:.2f})', f'{value_ratio:.2f}  ' +
       ('met' if value_ratio <= TARGET else 'MISSED')),
      ('arrays identical to the unchecked loader\'s', 'True'),
  ]
  print(f'\nmachine: {platform.machine()}, {os.cpu_count()} cores, '
        f'{common.cpu_model()}; numpy {np.__version__}; best of '
        f'{args.repeats}; k={k}, n={n}, n_test={n_test}')
  width = max(len(r[0]) for r in rows)
  for name, value in rows:
    print(f'  {name.ljust(width)}  {value}')


if __name__ == '__main__':
  main()
