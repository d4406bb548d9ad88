r"""The train binary: train trials on random subsets and write their records.

    python -m tf_memorization.train --gin_file=gin_configs/demo.gin \
        --workdir=/tmp/demo [--gin_bindings='SubsetDesign.num_trials = 8'] \
        [--trials=START:END | --shard_index=I --num_shards=N]

For each of its trials: build the trial's subset mask from (seed, trial index),
train the model on that subset, predict on the full train and test sets, and
write the trial record atomically. A trial whose record exists is skipped, so
running the same command again resumes an interrupted run, and several workers
(one per GPU, or per machine on shared storage) can share one workdir.
"""

import dataclasses
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import gin

from tf_memorization import cli

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
  flags.DEFINE_string(
      'data_dir', None, 'tfds data dir (same as binding load_dataset.data_dir).')


# Bindings that do not change what a trial computes, left out of the
# fingerprint (the design's own fields are added by SubsetDesign).
_NOT_FINGERPRINTED = ('SubsetDesign.', 'get_strategy.', 'load_dataset.data_dir',
                      'load_dataset.download', 'TrialTrainer.eval_batch_size')


@dataclasses.dataclass
class RunSummary:
  trained: list
  skipped: list
  fingerprint: str
  workdir: str


def select_trials(num_trials, trials=None, shard_index=None, num_shards=None):
  """The trial indices one process is responsible for."""
  if trials and (shard_index is not None or num_shards is not None):
    raise cli.UserError('Pass either --trials or --shard_index/--num_shards, '
                        'not both.')
  if trials:
    try:
      start, end = (int(v) for v in trials.split(':'))
    except ValueError as e:
      raise cli.UserError(f'--trials={trials!r} must be START:END, e.g. '
                          '0:100.') from e
    if not 0 <= start < end <= num_trials:
      raise cli.UserError(
          f'--trials={trials} is outside the run\'s trials 0:{num_trials} '
          '(SubsetDesign.num_trials). Choose 0 <= START < END <= '
          f'{num_trials}, or raise SubsetDesign.num_trials.')
    return list(range(start, end))
  if shard_index is not None or num_shards is not None:
    if shard_index is None or num_shards is None:
      raise cli.UserError('--shard_index and --num_shards go together.')
    if not 0 <= shard_index < num_shards:
      raise cli.UserError(f'--shard_index={shard_index} must be in '
                          f'[0, --num_shards={num_shards}).')
    return list(range(shard_index, num_trials, num_shards))
  return list(range(num_trials))


def config_fingerprint(dataset_info, design):
  """Hash of everything that decides what trial t computes."""
  lines = []
  for line in gin.operative_config_str().splitlines():
    stripped = line.strip()
    if not stripped or stripped.startswith('#'):
      continue
    if stripped.startswith(_NOT_FINGERPRINTED):
      continue
    lines.append(stripped)
  return cli.records.fingerprint({
      'dataset': {k: dataset_info[k] for k in
                  ('name', 'version', 'num_train', 'num_test', 'checksum')},
      'design': design.fingerprint_fields(),
      'training': sorted(lines),
  })


def _format_seconds(seconds):
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'


def _check_existing(workdir, fingerprint, found):
  """Refuses to add trials to a workdir that holds another config's.

  One record suffices: every record was checked against the workdir's
  fingerprint by the run that wrote it (records.load checks them all).
  """
  if not found:
    return
  path = next(iter(found.values()))
  meta = cli.records.read_metadata(path)
  if meta.get('fingerprint') != fingerprint:
    raise cli.UserError(
        f'{path} was trained with another config (fingerprint '
        f'{meta.get("fingerprint")}, this run {fingerprint}; compare '
        f'{os.path.join(workdir, cli.records.CONFIG_FILE)} with your gin '
        'files). Use a new --workdir for this config.')


def run(workdir, gin_files=(), gin_bindings=(), trials=None, shard_index=None,
        num_shards=None, data_dir=None, log=print):
  """Parses the config, then trains and records this process's trials."""
  from tf_memorization import data as data_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization import masks as masks_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization import records as records_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization import training  # pylint: disable=g-import-not-at-top

  if not workdir:
    raise cli.UserError('--workdir is required: where the trial records go.')
  bindings = list(gin_bindings)
  if data_dir:
    bindings.append(f'load_dataset.data_dir = {data_dir!r}')
  cli.parse_gin(list(gin_files), bindings)
  try:
    design = masks_lib.SubsetDesign()
  except (ValueError, TypeError) as e:
    raise cli.UserError(f'Bad SubsetDesign config: {e}'.replace('\n', ' ')) from e
  selected = select_trials(design.num_trials, trials, shard_index, num_shards)
  cli.check_writable(workdir)

  start = time.perf_counter()
  try:
    strategy = strategy_lib.get_strategy()
    dataset = data_lib.load_dataset()
    trainer = training.TrialTrainer(dataset, strategy)
  except (ValueError, TypeError) as e:
    if isinstance(e, cli.user_error_types()):
      raise
    raise cli.UserError(f'Bad config: {e}'.replace('\n', ' ')) from e
  chief = strategy_lib.is_chief(strategy)
  dataset_info = (records_lib.write_dataset_file(workdir, dataset) if chief
                  else dict(dataset.describe(), checksum=None))
  fingerprint = config_fingerprint(dataset_info, design)
  found = records_lib.list_records(workdir)
  _check_existing(workdir, fingerprint, found)
  if chief:
    records_lib.atomic_write_text(
        os.path.join(workdir, records_lib.CONFIG_FILE),
        f'# fingerprint: {fingerprint}\n' + gin.operative_config_str())
  setup_seconds = time.perf_counter() - start
  pending = [t for t in selected if t not in found]
  log(f'{dataset.name}: {len(dataset.train)} train / {len(dataset.test)} test '
      f'examples; model {trainer.model.name} '
      f'({trainer.model.count_params():,} parameters) on '
      f'{strategy.num_replicas_in_sync} replica(s); set-up '
      f'{setup_seconds:.1f}s; {len(selected)} trials selected, '
      f'{len(selected) - len(pending)} already done, {len(pending)} to train '
      f'(fingerprint {fingerprint}).')

  trained, skipped = [], [t for t in selected if t in found]
  run_start = time.perf_counter()
  for done, t in enumerate(pending):
    if records_lib.record_exists(workdir, t):  # another worker finished it
      skipped.append(t)
      continue
    trial_start = time.perf_counter()
    mask = design.mask(len(dataset.train), t)
    seed = design.trial_seed(t)
    result = trainer.train_trial(mask, seed)
    metadata = {'fingerprint': fingerprint, 'seed': seed,
                'dataset': dataset_info, 'design': design.fingerprint_fields(),
                'num_trials': design.num_trials,
                'subset_ratio': design.subset_ratio}
    if chief:
      written = records_lib.write_record(workdir, t, mask, result, metadata)
      (trained if written else skipped).append(t)
    else:
      trained.append(t)
    elapsed = time.perf_counter() - run_start
    per_trial = elapsed / (done + 1)
    remaining = len(pending) - done - 1
    m = result.metrics
    log(f'[{done + 1}/{len(pending)} trials, {per_trial:.1f}s/trial, ETA '
        f'{_format_seconds(per_trial * remaining)}] trial {t}: train '
        f'{m["train_accuracy"]:.3f} held-out {m["heldout_accuracy"]:.3f} '
        f'test {m["test_accuracy"]:.3f} '
        f'({time.perf_counter() - trial_start:.1f}s)')
  total = len(records_lib.list_records(workdir))
  log(f'Done: trained {len(trained)}, skipped {len(skipped)}; {workdir} holds '
      f'{total} of {design.num_trials} trials.')
  return RunSummary(trained=trained, skipped=skipped, fingerprint=fingerprint,
                    workdir=workdir)


def main(argv):
  if len(argv) > 1:
    cli.exit_on_user_error(cli.UserError(
        f'Unexpected arguments {argv[1:]}; use --gin_bindings for bindings.'))
  logging.set_verbosity(logging.WARNING)
  try:
    f = flags.FLAGS
    run(f.workdir, f.gin_file, f.gin_bindings, f.trials, f.shard_index,
        f.num_shards, f.data_dir,
        log=lambda line: print(line, flush=True))
  except cli.user_error_types() as e:
    cli.exit_on_user_error(e)


if __name__ == '__main__':
  define_flags()
  app.run(main)
