r"""The estimator at the paper's sizes: time, peak memory and its floors.

    python benchmarks/scale_benchmark.py --shape=imagenet|cifar100
        [--num_trials=K] [--rss_table=250,500,1000,2000] [--workdir=DIR]
        [--train_overhead] [--baseline_rev=REV]

Writes synthetic records of the shape once (benchmarks/synthetic_records.py,
record format 3: log-odds and proxies, so LiRA and the proxy table run) and
reuses them; for each k of the table (and --num_trials) a workdir of the
first k records (hard links) is estimated by the estimate binary with its
defaults, in its own process, after the page cache is dropped (as root;
otherwise said). Printed per k: wall seconds, the process's peak RSS (its
own high-water mark, VmHWM), the seconds of each stage (summary.json's
timings) and two floors measured in the same run:

  read      reading the bytes the estimator needs (record format 4: the
            core arrays, the log-odds and the metadata of each record, the
            proxies of the first 16) at the disk's cold read rate;
  products  the per-class float32 products masks^T @ test correctness, one
            pass at this k (influence within classes: n * k * n_test / C).

and the ratio wall / (read + products). Targets: ImageNet shape at
k = 2,000: peak RSS <= 6 GiB, wall <= 15 min and <= 1.5x the floors;
CIFAR-100 shape at k = 4,000: <= 3 GiB and no slower than the estimator of
--baseline_rev (run from a git worktree of that revision, on the same
records re-signed as format 3, which it reads, when given).

--train_overhead: at CIFAR-100's shape (the paper's ResNet-50, random
32x32 images), a trial's inference over all n + n_test examples and its
record write as a fraction of its training (160 epochs of 0.7 n examples).
"""

import argparse
import json
import os
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

SHAPES = {
    'imagenet': dict(num_train=1_281_167, num_test=50_000, num_classes=1000,
                     num_trials=2000, table=(250, 500, 1000, 2000),
                     rss_gib=6.0, seconds=900.0),
    'cifar100': dict(num_train=50_000, num_test=10_000, num_classes=100,
                     num_trials=4000, table=(500, 1000, 2000, 4000),
                     rss_gib=3.0, seconds=None),
}
TARGET_RATIO = 1.5
GIB = 1 << 30


def drop_caches():
  """Drops the page cache (root only); whether it could."""
  os.sync()
  try:
    with open('/proc/sys/vm/drop_caches', 'w') as f:
      f.write('3\n')
    return True
  except OSError:
    return False


def _linked_workdir(base, path):
  """`path` with a trials folder and hard links to `base`'s own files
  (dataset.npz, run.json)."""
  os.makedirs(os.path.join(path, 'trials'), exist_ok=True)
  for name in os.listdir(base):
    source = os.path.join(base, name)
    if os.path.isfile(source) and not os.path.exists(os.path.join(path, name)):
      os.link(source, os.path.join(path, name))
  return path


def sub_workdir(base, k):
  """A workdir of the first k records of `base` (hard links)."""
  path = _linked_workdir(base, os.path.join(os.path.dirname(base), f'k{k}'))
  trials = os.path.join(path, 'trials')
  for t in range(k):
    name = f'trial_{t:06d}.npz'
    if not os.path.exists(os.path.join(trials, name)):
      os.link(os.path.join(base, 'trials', name), os.path.join(trials, name))
  return path


def needed_members(t, proxy_trials=16):
  """The members of record t that the estimator with its defaults reads
  (record format 4): the core arrays, the log-odds (LiRA) and the
  metadata; the proxies too for the first trials (the proxy table)."""
  from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top
  names = records.CORE_FIELDS + ('train_logodds', 'metadata')
  if t < proxy_trials:
    names += records.DYNAMICS_FIELDS
  return {f'{name}.npy' for name in names}


def read_floor(workdir, k):
  """(seconds, bytes, cold) to read the bytes of the first k records the
  estimator needs (each needed member's zip entry, in one read), the page
  cache dropped first."""
  import zipfile  # pylint: disable=g-import-not-at-top
  ranges = []
  for t in range(k):
    path = os.path.join(workdir, 'trials', f'trial_{t:06d}.npz')
    with zipfile.ZipFile(path) as archive:
      wanted = needed_members(t)
      for info in archive.infolist():
        if info.filename in wanted:  # local header (<= 30 + name + 20) + data
          ranges.append((path, info.header_offset, 64 + len(info.filename) +
                         info.compress_size))
  cold = drop_caches()
  total = 0
  start = time.perf_counter()
  fd, opened = None, None
  for path, offset, size in ranges:
    if path != opened:
      if fd is not None:
        os.close(fd)
      fd, opened = os.open(path, os.O_RDONLY), path
    total += len(os.pread(fd, size, offset))
  if fd is not None:
    os.close(fd)
  elapsed = time.perf_counter() - start
  return elapsed, total, cold


def products_floor(workdir, k):
  """Seconds of one pass of per-class float32 products at this k (random
  0/1 values of the dataset's class sizes; generating them is not timed)."""
  with np.load(os.path.join(workdir, 'dataset.npz')) as data:
    train_labels, test_labels = data['train_labels'], data['test_labels']
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  train_sizes = np.bincount(train_labels, minlength=num_classes)
  test_sizes = np.bincount(test_labels, minlength=num_classes)
  rng = np.random.default_rng(0)
  seconds = 0.0
  for c in range(num_classes):
    if not train_sizes[c] or not test_sizes[c]:
      continue
    a = (rng.random((k, train_sizes[c]), np.float32) < 0.7).astype(np.float32)
    b = (rng.random((k, test_sizes[c]), np.float32) < 0.7).astype(np.float32)
    start = time.perf_counter()
    a.T @ b  # pylint: disable=pointless-statement
    seconds += time.perf_counter() - start
  return seconds


def run_estimate(workdir, repo=REPO, bindings=()):
  """Runs the estimate binary on `workdir` (cache dropped first): (wall
  seconds, peak RSS bytes, summary.json's object)."""
  drop_caches()
  log_path = os.path.join(workdir, 'estimate.log')
  command = [sys.executable, '-m', 'tf_memorization.estimate',
             f'--workdir={workdir}'] + [f'--gin_bindings={b}'
                                        for b in bindings]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=repo)
  from tf_memorization.core import progress  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  peak = 0.0  # the child's own high-water mark (VmHWM), polled: its
  # ru_maxrss would count this process's memory at the fork
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    while process.poll() is None:
      try:
        peak = max(peak, progress.peak_rss_mib(process.pid))
      except (OSError, ValueError):
        pass
      time.sleep(0.2)
  wall = time.perf_counter() - start
  if process.returncode:
    with open(log_path) as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f'the estimate binary failed on {workdir} '
                       f'(exit {process.returncode}):\n{tail}')
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    summary = json.load(f)
  return wall, peak * (1 << 20), summary


def stage_line(timings):
  parts = [f'{key[:-len("_seconds")]} {value:.0f}'
           for key, value in timings.items() if key.endswith('_seconds')]
  return ', '.join(parts)


def train_overhead(log=print):
  """A CIFAR-100 trial's inference and record write against its training."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import synthetic_records  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import models  # pylint: disable=g-import-not-at-top
  shape = SHAPES['cifar100']
  n, n_test, classes = (shape['num_train'], shape['num_test'],
                        shape['num_classes'])
  model = models.resnet50((32, 32, 3), classes, width=64, stem='cifar')
  optimizer = tf.keras.optimizers.SGD(0.1, momentum=0.9)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.random((128, 32, 32, 3), np.float32))
  labels = tf.constant(rng.integers(0, classes, 128))

  @tf.function
  def train_step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function
  def infer(x):
    return model(x, training=False)

  big = tf.constant(rng.random((512, 32, 32, 3), np.float32))
  train_step(images, labels).numpy()
  infer(big).numpy()
  steps = 3
  start = time.perf_counter()
  for _ in range(steps):
    train_step(images, labels).numpy()
  train_rate = steps * 128 / (time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(2):
    infer(big).numpy()
  infer_rate = 2 * 512 / (time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    synthetic_records.make_records(workdir, 2, n, n_test, classes, log=None)
    write_seconds = (time.perf_counter() - start) / 2
  train_seconds = 160 * 0.7 * n / train_rate
  infer_seconds = (n + n_test) / infer_rate
  fraction = (infer_seconds + write_seconds) / train_seconds
  log(f'train side (CIFAR-100 shape, ResNet-50 width 64, this CPU): train '
      f'{train_rate:.1f} img/s -> {train_seconds / 3600:.1f} h a trial '
      f'(160 epochs x {int(0.7 * n)}); inference {infer_rate:.1f} img/s -> '
      f'{infer_seconds:.0f}s over {n + n_test} examples; record write '
      f'(with synthetic predictions) {write_seconds:.2f}s; overhead '
      f'{100 * fraction:.2f}% of the trial')
  return fraction


def as_format_3(workdir, k):
  """A copy of the first k records of `workdir` re-signed as record format
  3 (the same arrays: what an estimator from before format 4 reads)."""
  import json as json_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization.core import storage  # pylint: disable=g-import-not-at-top
  from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top
  from tf_memorization.workdir import signatures  # pylint: disable=g-import-not-at-top
  path = _linked_workdir(workdir, f'{workdir}_format3')
  for t in range(k):
    target = records.record_path(path, t)
    if os.path.exists(target):
      continue
    arrays, meta = records.read_record(records.record_path(workdir, t))
    meta = signatures.sign(arrays, dict(meta, format_version=3))
    arrays = dict(arrays, metadata=np.array(json_lib.dumps(meta,
                                                           sort_keys=True)))
    storage.atomic_replace(target, storage.npz_bytes(arrays))
  return path


def baseline_repo(rev):
  """A git worktree of `rev` (reused)."""
  path = os.path.join(tempfile.gettempdir(), f'tf_memorization_rev_{rev}')
  if not os.path.exists(path):
    subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', path,
                    rev], check=True, capture_output=True)
  return path


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', choices=sorted(SHAPES), default='imagenet')
  parser.add_argument('--num_trials', type=int, default=None)
  parser.add_argument('--rss_table', default=None,
                      help='Comma-separated k (default: the shape\'s).')
  parser.add_argument('--workdir', default=None,
                      help='Where the records go (reused).')
  parser.add_argument('--train_overhead', action='store_true')
  parser.add_argument('--baseline_rev', default=None,
                      help='Also estimate the largest k with this revision.')
  args = parser.parse_args()
  shape = SHAPES[args.shape]
  k_max = args.num_trials or shape['num_trials']
  table = sorted({k for k in (
      [int(x) for x in args.rss_table.split(',')] if args.rss_table
      else shape['table']) if k <= k_max} | {k_max})
  from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top
  root = args.workdir or os.path.join(
      tempfile.gettempdir(),
      f'tf_memorization_scale_{args.shape}_v{records.FORMAT_VERSION}')
  base = os.path.join(root, 'records')
  print(common.machine_line())

  import synthetic_records  # pylint: disable=g-import-not-at-top
  os.makedirs(base, exist_ok=True)
  have = len(records.list_records(base))
  if have < k_max:
    with tempfile.TemporaryDirectory() as sample:  # a record's size
      synthetic_records.make_records(sample, 2, shape['num_train'],
                                     shape['num_test'], shape['num_classes'],
                                     log=None)
      size = os.path.getsize(records.record_path(sample, 0))
    free = os.statvfs(base).f_bavail * os.statvfs(base).f_frsize
    fits = have + int(0.8 * free // size)
    if fits < k_max:
      print(f'The disk holds {fits} more records of {size / 1e6:.1f} MB, not '
            f'{k_max}: measuring up to k = {fits}.')
      k_max = fits
      table = sorted({k for k in table if k <= k_max} | {k_max})
    start = time.perf_counter()
    synthetic_records.make_records(
        base, k_max, shape['num_train'], shape['num_test'],
        shape['num_classes'], log=print)
    print(f'wrote {k_max - have} records in '
          f'{time.perf_counter() - start:.0f}s (not counted below)')
  print(f'{args.shape} shape: n = {shape["num_train"]}, n_test = '
        f'{shape["num_test"]}, C = {shape["num_classes"]}; records in {base}')
  print(f'{"k":>6} {"wall s":>7} {"peak RSS":>9} {"read s":>7} {"prod s":>7} '
        f'{"ratio":>6}  stages (s)')
  rows = []
  for k in table:
    workdir = sub_workdir(base, k)
    read_s, read_bytes, cold = read_floor(workdir, k)
    product_s = products_floor(workdir, k)
    wall, rss, summary = run_estimate(workdir)
    ratio = wall / (read_s + product_s)
    rows.append((k, wall, rss, ratio))
    print(f'{k:>6} {wall:>7.0f} {rss / GIB:>6.2f} GiB {read_s:>7.0f} '
          f'{product_s:>7.1f} {ratio:>6.2f}  {stage_line(summary["timings"])}'
          + ('' if cold else '  (page cache NOT dropped: not root)'))
    print(f'       read {read_bytes / 1e9:.1f} GB at '
          f'{read_bytes / read_s / 1e6:.0f} MB/s; raw pairs '
          f'{summary.get("num_pairs")}, peak RSS after each stage (MiB): '
          f'{summary["timings"].get("peak_rss_mib")}')
  k, wall, rss, ratio = rows[-1]
  spread = max(r[2] for r in rows) / min(r[2] for r in rows)
  print(f'peak RSS from k = {rows[0][0]} to {k}: x{spread:.2f}')
  verdicts = [f'peak RSS {rss / GIB:.2f} GiB (target <= {shape["rss_gib"]})'
              f' {"PASS" if rss <= shape["rss_gib"] * GIB else "FAIL"}']
  if shape['seconds']:
    verdicts.append(f'wall {wall:.0f}s (target <= {shape["seconds"]:.0f}) '
                    f'{"PASS" if wall <= shape["seconds"] else "FAIL"}')
    verdicts.append(f'ratio {ratio:.2f} (target <= {TARGET_RATIO}) '
                    f'{"PASS" if ratio <= TARGET_RATIO else "FAIL"}')
  if args.baseline_rev:
    other = baseline_repo(args.baseline_rev)
    workdir = as_format_3(sub_workdir(base, k), k)
    before, before_rss, _ = run_estimate(workdir, repo=other)
    verdicts.append(
        f'{args.baseline_rev} on the same records (re-signed as format 3, '
        f'which it reads): {before:.0f}s, {before_rss / GIB:.2f} GiB; ours / '
        f'it: {wall / before:.2f} {"PASS" if wall <= before else "FAIL"}')
  print(f'k = {k}: ' + '; '.join(verdicts))
  if args.train_overhead:  # last: this process grows by the model
    train_overhead()


if __name__ == '__main__':
  main()
