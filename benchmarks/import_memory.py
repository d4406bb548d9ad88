r"""The import binary's peak memory against the number of trials k.

    python benchmarks/import_memory.py [--trials=8,32,128] [--n=50000]
        [--n_test=10000] [--classes=100] [--scratch=DIR] [--seed=0]

For each k of --trials, writes the arrays layout of k trials at CIFAR-100's
shape (masks bool [k, n], p = 0.5; train logits float16 [k, n, C]; test
logits float16 [k, n_test, C]; random labels; logits standard normal with
the true class raised by RAISE, so accuracy is about 0.6), the logits file
a trial at a time through np.lib.format.open_memmap (so this process holds
one trial, not the file), then runs

    python -m tf_memorization.import_trials --workdir=W --format=arrays \
        --masks=M.npy --train_logits=TR.npy --test_logits=TE.npy \
        --train_labels=YTR.npy --test_labels=YTE.npy

in a fresh process and deletes k's files and workdir before the next k
(the disk holds one k at a time). Each process is started by a small
python wrapper of its own, which prints getrusage(RUSAGE_CHILDREN)'s
ru_maxrss: the peak RSS of that one child (a wrapper per run, since the
figure is a maximum over every child so far; and a small parent, since a
child's figure also counts its parent's memory at the fork). Measured in
the same run, in the same way:

  fixed   a process that imports tensorflow and the binary's modules
          (tf_memorization.importing.run, .sources, .import_trials) and
          exits (twice: the faster start's wall, the larger RSS): the
          import binary's floor, whatever k;
  naive   the same imports, then np.load of the whole train logits file of
          the smallest k (no mmap): what reading the arrays whole holds.

Printed per k: the logits files' size (MB), the binary's peak RSS (MiB) and
its excess over `fixed`, wall seconds (TensorFlow's start included) and
trials/s (also net of `fixed`'s wall). The page cache is not dropped (the
files were just written): RSS does not count it. Targets: peak RSS flat in
k, peak RSS(largest k) / peak RSS(smallest k) <= 1.25, and every run
<= 2 GiB, so that importing k = 4,000 trials of this shape (40 GB of train
logits) stays within 2 GiB; exits 1 when either is missed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

MIB = 1 << 20
GIB = 1 << 30
TARGET_RSS_GIB = 2.0
TARGET_FLATNESS = 1.25
# The true class's logit is raised by this much over C - 1 standard normal
# others: at C = 100 the top-1 accuracy is about 0.6.
RAISE = 2.8
# What the generator holds of the logits at once (float32 before the cast).
CHUNK_BYTES = 64 * MIB

# Runs argv[2:] with its output in argv[1]; prints its exit status, its peak
# RSS (kB: RUSAGE_CHILDREN's maximum over this wrapper's one child) and its
# wall seconds.
WRAPPER = r'''
import resource, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], 'wb') as log:
  code = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
wall = time.perf_counter() - start
print('RESULT', code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
      wall)
'''

FIXED = ('import tensorflow\n'
         'import tf_memorization.importing.run\n'
         'import tf_memorization.importing.sources\n'
         'import tf_memorization.import_trials\n')
NAIVE = FIXED + ('import sys\nimport numpy as np\n'
                 'logits = np.load(sys.argv[1])\n'
                 'print(logits.shape, logits.dtype, logits.nbytes)\n')


def measure(argv, log_path):
  """Runs `argv` in a fresh process under its own wrapper: (wall seconds,
  peak RSS bytes); a RuntimeError with the log's tail if it failed."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', WRAPPER, log_path] + argv,
                          cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
  lines = [line for line in result.stdout.splitlines()
           if line.startswith('RESULT ')]
  if result.returncode or not lines:
    raise RuntimeError(f'the wrapper failed (exit {result.returncode}):\n'
                       f'{result.stderr[-3000:]}')
  _, code, rss_kb, wall = lines[-1].split()
  if int(code):
    with open(log_path, errors='replace') as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f'{" ".join(argv[:4])} ... failed (exit {code}):\n'
                       f'{tail}')
  return float(wall), int(rss_kb) * 1024


def write_labels(folder, n, n_test, num_classes, seed):
  rng = np.random.default_rng(seed)
  paths = {}
  for name, size in (('train_labels', n), ('test_labels', n_test)):
    paths[name] = os.path.join(folder, f'{name}.npy')
    np.save(paths[name], rng.integers(0, num_classes, size, dtype=np.int64))
  return paths


def write_logits(path, k, labels, num_classes, rng):
  """float16 [k, len(labels), C] logits, written a block of examples of a
  trial at a time (open_memmap reopened for each block and closed after:
  this process never maps more than one block)."""
  rows = len(labels)
  np.lib.format.open_memmap(path, mode='w+', dtype=np.float16,
                            shape=(k, rows, num_classes)).flush()
  block = max(1, CHUNK_BYTES // (4 * num_classes))
  for t in range(k):
    for start in range(0, rows, block):
      stop = min(rows, start + block)
      z = rng.standard_normal((stop - start, num_classes), np.float32)
      z[np.arange(stop - start), labels[start:stop]] += RAISE
      out = np.lib.format.open_memmap(path, mode='r+')
      out[t, start:stop] = z.astype(np.float16)
      out.flush()
      del out


def write_arrays(folder, k, n, n_test, num_classes, seed):
  """The arrays layout of k trials in `folder`: {flag name: path}."""
  os.makedirs(folder, exist_ok=True)
  paths = write_labels(folder, n, n_test, num_classes, seed)
  rng = np.random.default_rng([seed, k])
  paths['masks'] = os.path.join(folder, 'masks.npy')
  np.save(paths['masks'], rng.random((k, n), np.float32) < 0.5)
  for split, labels_name in (('train_logits', 'train_labels'),
                             ('test_logits', 'test_labels')):
    paths[split] = os.path.join(folder, f'{split}.npy')
    write_logits(paths[split], k, np.load(paths[labels_name]), num_classes,
                 rng)
  return paths


def accuracy(path, labels_path, trials=2):
  """Top-1 accuracy of the first trials' logits (a check of the data)."""
  labels = np.load(labels_path)
  logits = np.load(path, mmap_mode='r')
  return float(np.mean([np.mean(np.argmax(logits[t], axis=1) == labels)
                        for t in range(min(trials, len(logits)))]))


def needed_bytes(k, n, n_test, num_classes):
  """Disk a k takes: its arrays, and its records (generously)."""
  return (k * (n + n_test) * num_classes * 2 + k * n
          + k * (n + n_test) * 32)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', default='8,32,128',
                      help='Comma-separated k.')
  parser.add_argument('--n', type=int, default=50_000,
                      help='Training examples.')
  parser.add_argument('--n_test', type=int, default=10_000,
                      help='Test examples.')
  parser.add_argument('--classes', type=int, default=100)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--scratch', default=None,
                      help='Where each k\'s arrays and workdir go (removed '
                      'after its run; default: a new temporary folder).')
  args = parser.parse_args()
  table = sorted({int(k) for k in args.trials.split(',') if k.strip()})
  if not table or table[0] < 1:
    parser.error('--trials must be positive integers')
  n, n_test, num_classes = args.n, args.n_test, args.classes
  created = args.scratch is None
  scratch = args.scratch or tempfile.mkdtemp(prefix='import_memory_')
  os.makedirs(scratch, exist_ok=True)
  print(common.machine_line())
  print(f'shape: n = {n}, n_test = {n_test}, C = {num_classes}, float16 '
        f'logits; scratch {scratch}')
  try:
    run(args, table, scratch)
  finally:
    if created:
      shutil.rmtree(scratch, ignore_errors=True)


def run(args, table, scratch):
  n, n_test, num_classes = args.n, args.n_test, args.classes
  # Twice: the first start reads TensorFlow's files from disk; the wall is
  # the faster start, the RSS the larger.
  fixed = [measure([sys.executable, '-c', FIXED],
                   os.path.join(scratch, 'fixed.log')) for _ in range(2)]
  fixed_wall = min(wall for wall, _ in fixed)
  fixed_rss = max(rss for _, rss in fixed)
  print(f'fixed (import tensorflow + the binary\'s modules): '
        f'{fixed_rss / MIB:.0f} MiB, {fixed_wall:.1f}s (the faster of 2)')
  header = (f'{"k":>5} {"train MB":>9} {"test MB":>8} {"peak MiB":>9} '
            f'{"- fixed":>8} {"seconds":>8} {"trials/s":>9} {"net/s":>7}  '
            'data (not timed)')
  print(header)
  rows, naive = [], None
  for k in table:
    free = os.statvfs(scratch).f_bavail * os.statvfs(scratch).f_frsize
    need = needed_bytes(k, n, n_test, num_classes)
    if need > 0.9 * free:
      print(f'k = {k} needs about {need / 1e9:.1f} GB of disk, '
            f'{scratch} has {free / 1e9:.1f} GB free: stopping here.')
      break
    folder = os.path.join(scratch, f'k{k}')
    try:
      start = time.perf_counter()
      paths = write_arrays(folder, k, n, n_test, num_classes, args.seed)
      generate = time.perf_counter() - start
      acc = accuracy(paths['train_logits'], paths['train_labels'])
      workdir = os.path.join(folder, 'workdir')
      log_path = os.path.join(folder, 'import.log')
      wall, rss = measure(
          [sys.executable, '-m', 'tf_memorization.import_trials',
           f'--workdir={workdir}', '--format=arrays'] +
          [f'--{name}={paths[name]}' for name in
           ('masks', 'train_logits', 'test_logits', 'train_labels',
            'test_labels')], log_path)
      with open(log_path, errors='replace') as f:
        log = f.read()
      if f'Imported {k} trials' not in log:
        raise RuntimeError(f'the import of k = {k} did not say it imported '
                           f'{k} trials:\n{log[-3000:]}')
      found = len([name for name in os.listdir(os.path.join(
          workdir, 'trials')) if name.endswith('.npz')])
      train_mb = os.path.getsize(paths['train_logits']) / 1e6
      test_mb = os.path.getsize(paths['test_logits']) / 1e6
      net = wall - fixed_wall
      rows.append((k, rss))
      print(f'{k:>5} {train_mb:>9.0f} {test_mb:>8.0f} {rss / MIB:>9.0f} '
            f'{(rss - fixed_rss) / MIB:>8.0f} {wall:>8.1f} {k / wall:>9.2f} '
            f'{(k / net if net > 0 else float("nan")):>7.2f}  written in '
            f'{generate:.0f}s, accuracy {acc:.2f}, {found} records',
            flush=True)
      if naive is None:
        naive_wall, naive_rss = measure(
            [sys.executable, '-c', NAIVE, paths['train_logits']],
            os.path.join(folder, 'naive.log'))
        naive = (k, train_mb, naive_wall, naive_rss)
    finally:
      shutil.rmtree(folder, ignore_errors=True)
  if not rows:
    print('nothing measured')
    sys.exit(1)
  k, train_mb, naive_wall, naive_rss = naive
  print(f'naive (the same imports, then np.load of the k = {k} train '
        f'logits, {train_mb:.0f} MB): {naive_rss / MIB:.0f} MiB '
        f'(fixed + {(naive_rss - fixed_rss) / MIB:.0f}), {naive_wall:.1f}s; '
        f'the import binary at k = {k}: {rows[0][1] / MIB:.0f} MiB')
  (k_lo, rss_lo), (k_hi, rss_hi) = rows[0], rows[-1]
  ratio = rss_hi / rss_lo
  worst = max(rss for _, rss in rows)
  flat = ratio <= TARGET_FLATNESS
  within = worst <= TARGET_RSS_GIB * GIB
  per_trial = n * num_classes * 2 / 1e6
  print(f'peak RSS k = {k_hi} / k = {k_lo}: {ratio:.3f} (target <= '
        f'{TARGET_FLATNESS}) {"PASS" if flat else "FAIL"}; excess over fixed '
        f'{(rss_lo - fixed_rss) / MIB:.0f} -> {(rss_hi - fixed_rss) / MIB:.0f}'
        ' MiB')
  print(f'largest peak RSS {worst / GIB:.2f} GiB (target <= '
        f'{TARGET_RSS_GIB:g} GiB every run) {"PASS" if within else "FAIL"}; '
        f'at k = 4,000 the train logits are {4000 * per_trial / 1e3:.0f} GB, '
        'which np.load would hold whole'
        + ('; the flat peak keeps the import within the target there'
           if flat and within else ''))
  if not (flat and within):
    sys.exit(1)


if __name__ == '__main__':
  main()
