"""Building a run from its gin config, and training a list of jobs resumably.

Both binaries use this: the train binary for the subset trials, the estimate
binary for the experiments that retrain models (ablation, removal, leave-one-
out, subset-ratio sweep). A job is one model to train on one mask; its result
is a trial record, so every experiment resumes after a crash by skipping the
records that exist.
"""

import dataclasses
import os
import re
import time

import gin
import numpy as np
import tensorflow as tf

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import progress as progress_lib
from tf_memorization.core import storage
from tf_memorization.data import pipelines as data_lib
from tf_memorization.stats import masks as masks_lib
from tf_memorization.training import leases as leases_lib
from tf_memorization.training import models  # pylint: disable=unused-import
from tf_memorization.training import strategy as strategy_lib
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

# Bindings that do not change what a trial computes, left out of the
# fingerprint (the design's own fields are added by SubsetDesign); the
# estimator and the experiments declare their own configurables.
config.not_fingerprinted(
    'SubsetDesign.', 'get_strategy.', 'load_dataset.data_dir',
    'load_dataset.download', 'TrialTrainer.eval_batch_size',
    # A trial computes the same alone or packed (tested).
    'TrialTrainer.models_per_step', 'TrialTrainer.in_graph_input',
    'TrialTrainer.checkpoint_seconds', 'TrialTrainer.deterministic_ops',
    # What a record keeps beside the predictions, not what a trial computes:
    # records with and without those fields share a workdir (the estimator
    # uses a field when every record holds it).
    'TrialTrainer.record_dynamics', 'TrialTrainer.record_heldout_probs')


@dataclasses.dataclass
class Job:
  """One model to train: its index in its directory, mask and seed.

  `from_design`: the mask and seed are the run's subset design's for trial
  `index` (the records then name the design, and loading checks them
  against it); otherwise a plan chose them (experiments).
  """
  index: int
  mask: np.ndarray
  seed: int
  metadata: dict = dataclasses.field(default_factory=dict)
  from_design: bool = False


@dataclasses.dataclass
class RunSetup:
  """What a process needs to train trials of one config."""
  design: masks_lib.SubsetDesign
  strategy: object
  dataset: data_lib.Dataset          # with the labels trials train on
  clean_dataset: data_lib.Dataset    # before label noise
  flipped: np.ndarray                # indices whose label noise flipped
  trainer: trainer_lib.TrialTrainer
  dataset_info: dict
  fingerprint: str
  chief: bool


def config_fingerprint(dataset_info, design, pretrained_digests=()):
  """Hash of everything that decides what trial t computes: the data, the
  design, the training bindings, and the pretrained weights' digests (not
  their paths: models.mark_pretrained), where there are any."""
  fields = {
      'dataset': {k: dataset_info[k] for k in
                  ('name', 'version', 'num_train', 'num_test', 'checksum')},
      'design': design.fingerprint_fields(),
      'training': config.fingerprinted_lines(gin.operative_config_str()),
  }
  if pretrained_digests:
    fields['pretrained'] = sorted(pretrained_digests)
  return records.fingerprint(fields)


def subset_design():
  """The gin-configured SubsetDesign, or a UserError saying what is wrong."""
  try:
    return masks_lib.SubsetDesign()
  except (ValueError, TypeError) as e:
    raise errors.UserError(
        f'Bad SubsetDesign config: {e}'.replace('\n', ' ')) from e


def build(workdir, write=True, design=None, trainer_kwargs=None):
  """Builds the strategy, dataset and trainer of the parsed gin config.

  Args:
    workdir: where the run's records live; W/dataset.npz is written there
      (chief only) or checked against.
    write: write W/dataset.npz and W/operative_config.gin.
    design: a SubsetDesign (default: the gin-configured one).
    trainer_kwargs: overrides for TrialTrainer (e.g. a different model_fn).

  Returns:
    A RunSetup.
  """
  design = design or subset_design()
  try:
    strategy = strategy_lib.get_strategy()
    clean = data_lib.load_dataset()
    dataset, flipped = data_lib.label_noise(clean)
    trainer = trainer_lib.TrialTrainer(dataset, strategy,
                                       **(trainer_kwargs or {}))
  except (ValueError, TypeError) as e:
    if isinstance(e, errors.USER_ERRORS):
      raise
    raise errors.UserError(f'Bad config: {e}'.replace('\n', ' ')) from e
  chief = strategy_lib.is_chief(strategy)
  info = records.write_dataset_file(workdir, clean, dataset.train.labels,
                                    write=False)
  setup = RunSetup(design=design, strategy=strategy, dataset=dataset,
                   clean_dataset=clean, flipped=flipped, trainer=trainer,
                   dataset_info=info,
                   fingerprint=config_fingerprint(
                       info, design, trainer.pretrained_digests),
                   chief=chief)
  if write and chief:
    build_outputs(workdir, setup)
  return setup


def build_outputs(workdir, setup):
  """Writes (or checks) W/dataset.npz and writes W/operative_config.gin.

  The config is written without its locations (config.LOCATION_BINDINGS, e.g.
  --data_dir): a workdir never tells a later process where to read or write.
  Its gin imports are recorded as data (config.for_workdir), merged with
  those an earlier run of the same config recorded.
  """
  records.write_dataset_file(workdir, setup.clean_dataset,
                             setup.dataset.train.labels)
  path = os.path.join(workdir, files.CONFIG_FILE)
  recorded = []
  if tf.io.gfile.exists(path):
    try:
      recorded = config.recorded_imports(
          storage.read_bytes(path).decode(errors='replace'))
    except (OSError, errors.UserError, errors.RecordError):
      recorded = []  # rewritten whole below
  storage.atomic_write_text(
      path, f'# fingerprint: {setup.fingerprint}\n'
      '# Locations (data_dir) are not stored: pass them with the flags.\n'
      + config.for_workdir(gin.operative_config_str(), recorded))


def _another_config(what, theirs, setup, directory):
  """The refusal of a workdir of another config; `what` names the evidence."""
  return errors.UserError(
      f'{what} another config (fingerprint {theirs}, this run '
      f'{setup.fingerprint}; compare '
      f'{os.path.join(directory, files.CONFIG_FILE)} with your gin files). '
      'Use a new --workdir for this config.')


def check_workdir(directory, setup, selected):
  """Refuses to train into a workdir of another config; verifies its records.

  The first process into a workdir fixes its config (records.fix_config,
  an exclusive create of W/run.json), so of several processes starting
  together with different configs one trains and the others are refused
  here, before any training. A workdir of an earlier version (records but
  no W/run.json) is fixed to its records' fingerprint, which must be ours.
  Every existing record of the `selected` trials is verified in full
  (loading.check: checksum, dataset, mask, seed, values), since the run
  skips them as done.

  Returns:
    {trial index: metadata} of the verified records among `selected`.
  """
  fixed = records.read_run_file(directory)
  fixed_by = (f'{directory} is fixed (by '
              f'{records.run_file_path(directory)}) to')
  source = ((fixed or {}).get('description') or {}).get('imported')
  if fixed is not None and isinstance(source, dict):
    raise errors.UserError(
        f'{directory} holds trials imported from {source.get("source")} '
        f'({source.get("name")}; {records.run_file_path(directory)}): the '
        'train binary adds no trials to it. Train into a new --workdir (or '
        'add trials of the same models with tf_memorization.TrialWriter).')
  if fixed is not None and fixed['fingerprint'] != setup.fingerprint:
    raise _another_config(fixed_by, fixed['fingerprint'], setup, directory)
  if fixed is None:
    for path in records.list_records(directory).values():
      theirs = records.read_metadata(path).get('fingerprint')
      if theirs != setup.fingerprint:
        raise _another_config(f'{path} was trained with', theirs, setup,
                              directory)
  verified = loading.check(directory, trial_indices=selected,
                           fingerprint=setup.fingerprint,
                           dataset_info=setup.dataset_info,
                           labels=(setup.dataset.train.labels,
                                   setup.dataset.test.labels))
  if setup.chief and fixed is None:
    theirs = records.fix_config(directory, setup.fingerprint, {
        'dataset': {k: setup.dataset_info[k] for k in ('name', 'version',
                                                       'num_train',
                                                       'num_test')},
        'design': setup.design.fingerprint_fields()})
    if theirs != setup.fingerprint:  # another process came first
      raise _another_config(fixed_by, theirs, setup, directory)
  return verified


TENSORBOARD_DIR = 'tensorboard'


def _summary_writer(directory):
  return tf.summary.create_file_writer(os.path.join(directory,
                                                    TENSORBOARD_DIR))


def _write_scalars(writer, index, metrics):
  """Final metrics of a trial as TensorBoard scalars over the trial index."""
  with writer.as_default(step=index):
    for key, value in metrics.items():
      if isinstance(value, (int, float)) and np.isfinite(value):
        tf.summary.scalar(f'trial/{key}', float(value))
  writer.flush()


def group_jobs(jobs, size, steps_of):
  """Splits jobs into groups of at most `size` with equal `steps_of(job)`.

  A group fills as jobs arrive in order, so the first jobs finish first; a
  job waits at most until `size` jobs of its step count have arrived, and the
  partial groups go last.
  """
  groups, open_groups = [], {}
  for job in jobs:
    key = steps_of(job)
    group = open_groups.setdefault(key, [])
    group.append(job)
    if len(group) == size:
      groups.append(group)
      del open_groups[key]
  return groups + list(open_groups.values())


CHECKPOINTS_DIR = 'checkpoints'


def checkpoint_path(directory, index):
  return os.path.join(directory, CHECKPOINTS_DIR, f'trial_{index:06d}.npz')


def train_jobs(setup, directory, jobs, log=print, label='trials',
               lease_seconds=leases_lib.LEASE_SECONDS):
  """Trains every job whose record is not in `directory` yet.

  Jobs train `TrialTrainer.models_per_step` at a time (see group_jobs); each
  record is written as soon as its group is done. Workers sharing the
  directory claim jobs before training them (leases.Leases), so each job is
  trained once; jobs a live worker holds are left to it, a dead worker's are
  taken over once its lease expires (a second pass at the end picks those
  up). Trials checkpoint under `directory/checkpoints` and resume there.

  Args:
    setup: a RunSetup.
    directory: where the records go (a workdir, or an experiment's folder).
    jobs: Job objects.
    log: callable taking one line of progress.
    label: what the jobs are, for the progress lines.
    lease_seconds: how long a claim lasts without renewal.

  Returns:
    (trained, skipped, diverged): lists of job indices; `diverged` are the
    trained jobs whose model diverged (flagged in their records).
  """
  found = records.list_records(directory)
  pending = [job for job in jobs if job.index not in found]
  skipped = [job.index for job in jobs if job.index in found]
  trained, diverged = [], []
  trainer = setup.trainer
  # The workers of one multi-worker strategy train the same jobs in step:
  # they must not claim or skip jobs on their own.
  claim = not strategy_lib.is_multi_worker(setup.strategy)
  writer = (_summary_writer(directory) if setup.chief and pending else None)
  progress = progress_lib.Progress(len(pending))
  done = 0
  held_elsewhere = []

  if setup.chief:
    # A run killed between a record and its checkpoint's or claim's removal.
    for sub, suffix in ((CHECKPOINTS_DIR, 'npz'),
                        (files.CLAIMS_DIR, 'claim')):
      folder = os.path.join(directory, sub)
      if not tf.io.gfile.isdir(folder):
        continue
      for name in tf.io.gfile.listdir(folder):
        match = re.fullmatch(rf'trial_(\d+)\.{suffix}', name)
        if match and int(match.group(1)) in found:
          try:
            tf.io.gfile.remove(os.path.join(folder, name))
          except tf.errors.NotFoundError:
            pass  # its worker removed it meanwhile

  def steps_of(job):
    return (trainer.total_steps(job.mask),
            trainer_lib.checkpoint_epoch(checkpoint_path(directory, job.index)))

  with leases_lib.Leases(directory, lease_seconds) as lease:
    queue = pending
    while queue:
      for group in group_jobs(queue, trainer.models_per_step, steps_of):
        ready = []
        for job in group:
          if claim and records.record_exists(directory, job.index):
            skipped.append(job.index)  # another worker finished it
            done += 1
          elif claim and not lease.claim(job.index):
            held_elsewhere.append(job)
          else:
            ready.append(job)
        if not ready:
          continue
        group_start = time.perf_counter()
        results = trainer.train_trials(
            [job.mask for job in ready], [job.seed for job in ready],
            checkpoints=[checkpoint_path(directory, job.index)
                         for job in ready],
            checkpoint_tag=setup.fingerprint)
        group_seconds = time.perf_counter() - group_start
        for job, result in zip(ready, results):
          metadata = {'fingerprint': setup.fingerprint, 'seed': job.seed,
                      'dataset': setup.dataset_info,
                      'design': (setup.design.fingerprint_fields()
                                 if job.from_design else None),
                      'num_trials': setup.design.num_trials,
                      'subset_ratio': setup.design.subset_ratio,
                      **job.metadata}
          if setup.chief:
            written = records.write_record(directory, job.index, job.mask,
                                           result, metadata)
            (trained if written else skipped).append(job.index)
            if written:
              _write_scalars(writer, job.index, result.metrics)
              if written['diverged']:
                diverged.append(job.index)
                log(f'WARNING: {label[:-1] if label.endswith("s") else label}'
                    f' #{job.index} diverged: {written["diverged"]}. Its '
                    'record is flagged; the estimator refuses it unless '
                    "Estimator.diverged_trials = 'skip'. Lower "
                    'TrialTrainer.base_learning_rate (or check the data) '
                    'and use a new --workdir.')
            path = checkpoint_path(directory, job.index)
            if tf.io.gfile.exists(path):
              tf.io.gfile.remove(path)
          else:
            trained.append(job.index)
          if claim:
            lease.release(job.index)
          done += 1
          remaining = len(pending) - done - len(held_elsewhere)
          m = result.metrics
          log(f'[{done}/{len(pending)} {label}, '
              f'{progress.per_unit(done):.1f}s each, ETA '
              f'{progress.eta(done, remaining)}] #{job.index}: '
              f'train {m["train_accuracy"]:.3f} held-out '
              f'{m["heldout_accuracy"]:.3f} test {m["test_accuracy"]:.3f} '
              f'({group_seconds / len(ready):.1f}s'
              + (f' of a group of {len(ready)}' if len(ready) > 1 else '')
              + ')')
      # Jobs other workers held: take over those whose lease has expired
      # (their worker died); leave the rest to their live workers.
      queue = [job for job in held_elsewhere
               if not records.record_exists(directory, job.index)
               and lease.expired(job.index)]
      retry = {job.index for job in queue}
      held_elsewhere = [job for job in held_elsewhere
                        if job.index not in retry]
  for job in held_elsewhere:
    if records.record_exists(directory, job.index):
      skipped.append(job.index)
    else:
      log(f'#{job.index}: claimed by a live worker '
          f'({(lease.read(job.index) or ("?",))[0]}); left to it.')
  return trained, skipped, diverged
