"""The interface of the retraining experiments, their registry, and the
plumbing they share.

An experiment is a gin configurable class registered under its kind (the
name `Estimator.experiments` lists) with `register`; the estimator builds
every listed experiment before any heavy work (so a bad binding fails at
once), then calls `run(inputs)` with everything it needs (`Inputs`: the
main run's records and scores, the trials' training setup, a trainer
factory, an influence function with the estimator's settings) and puts the
summary it returns into summary.json under its kind.

Each experiment trains its models through the same public trainer as the
train binary (runs.build / runs.train_jobs) and keeps every retrained model as
a trial record under W/experiments/<name>/, next to a `plan.json` naming each
job (its mask, seed and role). Running the estimator again resumes an
interrupted experiment: jobs whose records exist are not retrained, and a plan
that no longer matches (e.g. the memorization estimates changed because more
trials were added) is refused with a message saying which folder to delete.

Outputs (W/estimates/, through `estimates.write_table`): one CSV table and
one JSON summary per experiment, plus a PNG where a plot says more than the
table.
"""

import dataclasses
import hashlib
import json
import os
from typing import Callable

import tensorflow as tf

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.stats import scores
from tf_memorization.training import runs
from tf_memorization.workdir import loading
from tf_memorization.workdir import records


@dataclasses.dataclass
class Inputs:
  """What an experiment is handed.

  Attributes:
    workdir: the main run's workdir (experiments train under
      W/experiments/).
    output_dir: where its tables and figures go (the estimates folder being
      written).
    setup: the trials' runs.RunSetup (dataset, design, strategy, trainer).
    records: the main run's loading.Records.
    memorization: their scores.Memorization.
    influence: their scores.InfluenceResult (the estimator's settings).
    influence_of: (records, memorization values, rows=slice, topk=int) ->
      scores.InfluenceResult with the estimator's settings, of other
      records.
    new_trainer: (**TrialTrainer arguments) -> a TrialTrainer of the
      trials' dataset and strategy (e.g. trainable_layers=...).
    log: callable taking one line.
  """
  workdir: str
  output_dir: str
  setup: runs.RunSetup
  records: loading.Records
  memorization: scores.Memorization
  influence: scores.InfluenceResult
  influence_of: Callable
  new_trainer: Callable
  log: Callable


class Experiment:
  """An experiment: `run(inputs)` returns its summary (a JSON-able dict).

  Subclasses are gin configurables whose __init__ checks every argument (a
  ConfigError naming the binding), and are registered with `register`.
  """
  kind = None  # set by register

  def run(self, inputs):
    raise NotImplementedError


# Experiment classes by kind, in the order they are registered.
REGISTRY = {}


def register(kind):
  """Class decorator: registers an experiment under `kind`; its bindings do
  not change what a trial computes (left out of the fingerprint)."""

  def decorate(cls):
    cls.kind = kind
    REGISTRY[kind] = cls
    config.not_fingerprinted(f'{cls.__name__}.')
    return cls

  return decorate


def seed_of(base_seed, name, index):
  """The training seed of an experiment's model `index` (a hash: stable
  across runs and versions)."""
  digest = hashlib.sha256(f'{base_seed}:{name}:{index}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF


def experiment_dir(workdir, name):
  return os.path.join(workdir, files.EXPERIMENTS_DIR, name)


def prepare(workdir, name, setup, jobs):
  """Creates (or checks) W/experiments/<name>: dataset file and plan.

  Raises:
    errors.UserError: the folder holds a different plan.
  """
  directory = experiment_dir(workdir, name)
  tf.io.gfile.makedirs(directory)
  records.write_dataset_file(directory, setup.clean_dataset,
                             setup.dataset.train.labels)
  plan = {'fingerprint': setup.fingerprint,
          'jobs': [{'index': j.index, 'seed': j.seed,
                    'mask': records.mask_digest(j.mask), **j.metadata}
                   for j in jobs]}
  path = os.path.join(directory, files.PLAN_FILE)
  text = json.dumps(plan, sort_keys=True, indent=1)
  if tf.io.gfile.exists(path):
    if storage.read_bytes(path) != text.encode():
      raise errors.UserError(
          f'{path} describes other jobs than this run asks for (the config, '
          'the estimates it starts from, or its bindings changed). Delete '
          f'{directory} to redo the experiment, or restore its settings.')
  else:
    storage.atomic_write_text(path, text)
  return directory


def load_planned(directory, setup, jobs):
  """The records of an experiment folder, each checked against its planned
  job (mask, seed) and the run's fingerprint: a record of other models
  (copied, or a linked trials folder) is refused, not counted."""
  return loading.load(directory, margins=False, jobs=jobs,
                      fingerprint=setup.fingerprint)


def run_jobs(workdir, name, setup, jobs, log):
  """Trains the jobs of W/experiments/<name> not trained yet (it resumes);
  their checked records."""
  directory = prepare(workdir, name, setup, jobs)
  runs.train_jobs(setup, directory, jobs, log=log, label=f'{name} models')
  return load_planned(directory, setup, jobs)
