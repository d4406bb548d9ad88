r"""The train binary: train trials on random subsets and write their records.

    python -m tf_memorization.train --gin_file=gin_configs/demo.gin \
        --workdir=/tmp/demo [--gin_bindings='SubsetDesign.num_trials = 8'] \
        [--trials=START:END | --shard_index=I --num_shards=N]
        [--target_stderr=0.05 --max_trials=N [--round_trials=R]]

For each of its trials: build the trial's subset mask from (seed, trial index),
train the model on that subset, predict on the full train and test sets, and
write the trial record atomically. A trial whose record exists is skipped, so
running the same command again resumes an interrupted run, and several workers
(one per GPU, or per machine on shared storage) can share one workdir. With
--target_stderr it trains in rounds until the planner's target (sequential.py).
"""

import dataclasses
import time

from tf_memorization.core import quiet

if __name__ == '__main__':
  quiet.filter_library_logs()  # before TensorFlow loads
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from tf_memorization import cli
from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import storage

def define_flags():
  """Defines the flags; only when run as a binary, so that the library
  modules can be imported together (absl flags are global)."""
  flags.DEFINE_multi_string(
      'gin_file', [], 'gin config files, e.g. gin_configs/demo.gin.')
  flags.DEFINE_multi_string(
      'gin_bindings', [], 'gin bindings, e.g. "SubsetDesign.num_trials = 8".')
  flags.DEFINE_string('workdir', None, 'Where records are written.')
  flags.DEFINE_string(
      'trials', None, 'START:END, the trial indices this process runs '
      '(default: all of SubsetDesign.num_trials).')
  flags.DEFINE_integer(
      'shard_index', None, 'This worker runs trials t with t % num_shards == '
      'shard_index.')
  flags.DEFINE_integer('num_shards', None, 'Number of shards.')
  flags.DEFINE_float(
      'target_stderr', None, 'Sequential training: rounds of trials until the '
      '0.9-quantile memorization stderr the planner predicts reaches this.')
  flags.DEFINE_integer('max_trials', None, 'With --target_stderr: the cap.')
  flags.DEFINE_integer(
      'round_trials', None, 'With --target_stderr: trials a round adds at '
      'least (default SubsetDesign.num_trials).')
  flags.DEFINE_string(
      'data_dir', None, 'tfds data dir (same as binding load_dataset.data_dir).')


@dataclasses.dataclass
class RunSummary:
  trained: list
  skipped: list
  fingerprint: str
  workdir: str
  diverged: list = dataclasses.field(default_factory=list)


def select_trials(num_trials, trials=None, shard_index=None, num_shards=None):
  """The trial indices one process is responsible for."""
  if trials and (shard_index is not None or num_shards is not None):
    raise errors.UserError('Pass either --trials or --shard_index/--num_shards, '
                           'not both.')
  if trials:
    try:
      start, end = (int(v) for v in trials.split(':'))
    except ValueError as e:
      raise errors.UserError(f'--trials={trials!r} must be START:END, e.g. '
                             '0:100.') from e
    if not 0 <= start < end <= num_trials:
      raise errors.UserError(
          f'--trials={trials} is outside the run\'s trials 0:{num_trials} '
          '(SubsetDesign.num_trials). Choose 0 <= START < END <= '
          f'{num_trials}, or raise SubsetDesign.num_trials.')
    return list(range(start, end))
  if shard_index is not None or num_shards is not None:
    if shard_index is None or num_shards is None:
      raise errors.UserError('--shard_index and --num_shards go together.')
    if not 0 <= shard_index < num_shards:
      raise errors.UserError(f'--shard_index={shard_index} must be in '
                             f'[0, --num_shards={num_shards}).')
    return list(range(shard_index, num_trials, num_shards))
  return list(range(num_trials))


def run(workdir, gin_files=(), gin_bindings=(), trials=None, shard_index=None,
        num_shards=None, data_dir=None, log=print):
  """Parses the config, then trains and records this process's trials."""
  from tf_memorization import configurables  # pylint: disable=g-import-not-at-top,unused-import
  from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import runs  # pylint: disable=g-import-not-at-top

  if not workdir:
    raise errors.UserError('--workdir is required: where the trial records go.')
  bindings = list(gin_bindings)
  if data_dir:
    bindings.append(f'load_dataset.data_dir = {data_dir!r}')
  config.parse_gin(list(gin_files), bindings)
  design = runs.subset_design()
  selected = select_trials(design.num_trials, trials, shard_index, num_shards)
  try:  # e.g. a balanced design whose ratio puts examples in 0 or all trials
    design.mask(1, 0)
  except ValueError as e:
    raise errors.UserError(f'Bad SubsetDesign config: {e}') from e
  created = storage.check_writable(workdir)

  start = time.perf_counter()
  try:
    # Check the workdir's records before writing its config (write=False).
    setup = runs.build(workdir, write=False, design=design)
    found = runs.check_workdir(workdir, setup, selected)
  except BaseException:
    storage.remove_if_empty(created)  # bad input leaves no empty workdir behind
    raise
  if setup.chief:
    runs.build_outputs(workdir, setup)
  setup_seconds = time.perf_counter() - start
  dataset, trainer = setup.dataset, setup.trainer
  pending = [t for t in selected if t not in found]
  log(f'{dataset.name}: {len(dataset.train)} train / {len(dataset.test)} test '
      f'examples; model {trainer.model.name} '
      f'({trainer.model.count_params():,} parameters) on '
      f'{setup.strategy.num_replicas_in_sync} replica(s); set-up '
      f'{setup_seconds:.1f}s; {len(selected)} trials selected, '
      f'{len(selected) - len(pending)} already done, {len(pending)} to train '
      f'(fingerprint {setup.fingerprint}).')
  jobs = [runs.Job(t, design.mask(len(dataset.train), t), design.trial_seed(t),
                   from_design=True) for t in pending]
  trained, skipped, diverged = runs.train_jobs(setup, workdir, jobs, log=log)
  skipped = sorted(skipped + [t for t in selected if t in found])
  diverged += [t for t, meta in found.items() if meta.get('diverged')]
  total = len(records.list_records(workdir))
  log(f'Done: trained {len(trained)}, skipped {len(skipped)}; {workdir} holds '
      f'{total} of {design.num_trials} trials.')
  if diverged:
    log(f'WARNING: {len(diverged)} of this run\'s {len(selected)} trials '
        f'diverged (trials {sorted(diverged)[:10]}): see the warnings above.')
  return RunSummary(trained=trained, skipped=skipped,
                    fingerprint=setup.fingerprint, workdir=workdir,
                    diverged=sorted(diverged))


def run_sequential(workdir, gin_files=(), gin_bindings=(), target_stderr=None,
                   max_trials=None, round_trials=None, trials=None,
                   shard_index=None, num_shards=None, data_dir=None, log=print):
  """Rounds of `run`, each with `SubsetDesign.num_trials = K` bound, until
  the planner's target stderr or max_trials (sequential.train_until)."""
  from tf_memorization import configurables  # pylint: disable=g-import-not-at-top,unused-import
  from tf_memorization.estimation import settings as settings_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import runs  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import sequential  # pylint: disable=g-import-not-at-top

  sequential.check_flags(target_stderr, max_trials, round_trials, trials,
                         shard_index, num_shards)
  if not workdir:
    raise errors.UserError('--workdir is required: where the trial records go.')
  config.parse_gin(list(gin_files), list(gin_bindings))
  design = runs.subset_design()
  sequential.check_design(design, max_trials)
  try:  # the planner's settings (with your gin files' Estimator bindings)
    settings = settings_lib.Estimator()
  except (ValueError, TypeError) as e:
    raise errors.UserError(f'Bad Estimator config: {e}') from e

  def train_round(k):
    return run(workdir, gin_files, [*gin_bindings, f'SubsetDesign.num_trials = '
                                    f'{k}'], data_dir=data_dir, log=log)

  return sequential.train_until(
      train_round, lambda: sequential.assess(workdir, settings, target_stderr),
      sequential.first_round(workdir, design.num_trials, max_trials),
      target_stderr, max_trials, round_trials or design.num_trials, log=log)


def _main():
  f = flags.FLAGS
  log = lambda line: print(line, flush=True)  # pylint: disable=unnecessary-lambda-assignment
  if (f.target_stderr, f.max_trials, f.round_trials) != (None,) * 3:
    run_sequential(f.workdir, f.gin_file, f.gin_bindings, f.target_stderr,
                   f.max_trials, f.round_trials, f.trials, f.shard_index,
                   f.num_shards, f.data_dir, log=log)
  else:
    run(f.workdir, f.gin_file, f.gin_bindings, f.trials, f.shard_index,
        f.num_shards, f.data_dir, log=log)


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)
