"""End-to-end tests of the train binary (in process and as a subprocess)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.stats import masks
from tf_memorization import train
from tf_memorization.training import runs
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import GIN_DIR, REPO, error_line, run_in_process

# Shrinks the paper's CIFAR-100 config to seconds; the dataset path, the
# strategy helper, the model family and the record writing stay the real ones.
TINY_CIFAR = [
    'SubsetDesign.num_trials = 2',
    'TrialTrainer.model_fn = @resnet_cifar',
    'resnet_cifar.depth = 8',
    'resnet_cifar.width = 4',
    'TrialTrainer.epochs = 1',
    'TrialTrainer.batch_size = 16',
    'TrialTrainer.eval_batch_size = 64',
    'TrialTrainer.warmup_epochs = 0',
    "get_strategy.kind = 'mirrored'",
]


@pytest.mark.slow
def test_cifar100_end_to_end_under_mirrored_strategy(tmp_path):
  workdir = str(tmp_path / 'w')
  lines = []
  with tfds.testing.mock_data(num_examples=48):
    summary = train.run(workdir, [os.path.join(GIN_DIR, 'cifar100.gin')],
                        TINY_CIFAR, log=lines.append)
    assert summary.trained == [0, 1]
    assert '2 replica(s)' in lines[0]  # MirroredStrategy over 2 CPU devices
    assert any('ETA' in line for line in lines)

    # Three SGD steps on random mock images: a trial may still predict one
    # class for everything, which its record flags (as diverged).
    loaded = loading.load(workdir, predictions=True, diverged='keep')
    for row, t in enumerate(loaded.trial_indices):
      constant = len(np.unique(np.concatenate([loaded.train_pred[row],
                                               loaded.test_pred[row]]))) == 1
      assert (loaded.metadata[row]['diverged'] is not None) == constant
      assert (t in loaded.diverged) == constant
    k, n = loaded.masks.shape
    assert (k, n) == (2, 48)
    assert loaded.test_correct.shape == (2, 48)
    assert loaded.dataset_info['name'] == 'cifar100'
    assert loaded.dataset_info['num_classes'] == 100
    np.testing.assert_array_equal(loaded.trial_indices, [0, 1])
    design = masks.SubsetDesign(num_trials=2, subset_ratio=0.7)
    for row, t in enumerate(loaded.trial_indices):
      np.testing.assert_array_equal(loaded.masks[row], design.mask(n, t))
      assert loaded.masks[row].sum() == masks.round_half_up(0.7 * n)
      meta = loaded.metadata[row]
      # The accuracies logged at training time agree with the stored arrays.
      in_subset = loaded.train_correct[row][loaded.masks[row]]
      assert meta['metrics']['train_accuracy'] == pytest.approx(in_subset.mean())
      assert meta['metrics']['test_accuracy'] == pytest.approx(
          loaded.test_correct[row].mean())
      assert meta['seed'] == design.trial_seed(t)
    np.testing.assert_array_equal(
        loaded.train_correct, loaded.train_pred == loaded.train_labels)
    assert np.all((loaded.train_prob >= 0) & (loaded.train_prob <= 1))
    # argmax class has the largest probability: margin > 0 exactly when correct
    # (up to float16 rounding of tiny margins)
    clear = np.abs(loaded.train_margin.astype(np.float32)) > 1e-3
    np.testing.assert_array_equal((loaded.train_margin > 0)[clear],
                                  loaded.train_correct[clear])
    assert os.path.exists(os.path.join(workdir, files.CONFIG_FILE))
    assert not [f for f in os.listdir(os.path.join(workdir, 'trials'))
                if '.tmp-' in f]

    again = train.run(workdir, [os.path.join(GIN_DIR, 'cifar100.gin')],
                      TINY_CIFAR, log=lines.append)
    assert again.trained == [] and again.skipped == [0, 1]
    assert again.fingerprint == summary.fingerprint


@pytest.mark.slow
def test_shards_and_ranges_resume_and_extend(tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  gin_file = [os.path.join(GIN_DIR, 'tiny.gin')]
  bindings = ["SubsetDesign.design = 'independent'", 'TrialTrainer.epochs = 1',
              "get_strategy.kind = 'one_device'"]
  first = train.run(workdir, gin_file, bindings, shard_index=1, num_shards=2,
                    data_dir=digits_data_dir, log=lambda _: None)
  assert first.trained == [1, 3]
  second = train.run(workdir, gin_file, bindings, trials='0:3',
                     data_dir=digits_data_dir, log=lambda _: None)
  assert second.trained == [0, 2] and second.skipped == [1]
  # The independent design does not depend on num_trials: a run may grow.
  grown = train.run(workdir, gin_file,
                    bindings + ['SubsetDesign.num_trials = 5'],
                    data_dir=digits_data_dir, log=lambda _: None)
  assert grown.trained == [4] and grown.fingerprint == first.fingerprint
  assert list(records.list_records(workdir)) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_trial_metrics_go_to_tensorboard(tmp_path, digits_data_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'w')
  train.run(workdir, [os.path.join(GIN_DIR, 'tiny.gin')],
            ['TrialTrainer.epochs = 1', "get_strategy.kind = 'one_device'"],
            trials='0:2', data_dir=digits_data_dir, log=lambda _: None)
  loaded = loading.load(workdir)
  seen = {}
  for path in tf.io.gfile.glob(os.path.join(workdir, 'tensorboard', '*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        seen[(value.tag, event.step)] = float(
            tf.make_ndarray(value.tensor))
  for row, t in enumerate(loaded.trial_indices):
    assert seen[('trial/test_accuracy', t)] == pytest.approx(
        loaded.test_correct[row].mean())
    assert ('trial/train_seconds', t) in seen


@pytest.mark.slow
def test_another_config_in_the_same_workdir_is_refused(tmp_path,
                                                       digits_data_dir):
  workdir = str(tmp_path / 'w')
  gin_file = [os.path.join(GIN_DIR, 'tiny.gin')]
  base = ['TrialTrainer.epochs = 1', "get_strategy.kind = 'one_device'"]
  train.run(workdir, gin_file, base, trials='0:1', data_dir=digits_data_dir,
            log=lambda _: None)
  with pytest.raises(errors.UserError, match='another config'):
    train.run(workdir, gin_file, base + ['small_resnet.width = 4'],
              trials='1:2', data_dir=digits_data_dir, log=lambda _: None)
  assert list(records.list_records(workdir)) == [0]


@pytest.mark.parametrize('trials, shard, message', [
    ('0:9', None, 'outside the run'),
    ('3', None, 'START:END'),
    (None, (2, 2), 'shard_index'),
])
def test_bad_trial_selection(trials, shard, message):
  shard_index, num_shards = shard or (None, None)
  with pytest.raises(errors.UserError, match=message):
    train.select_trials(4, trials, shard_index, num_shards)


def _run_binary(args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
      [sys.executable, '-m', 'tf_memorization.train', *args], cwd=cwd,
      capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.slow
def test_the_binary_exits_2_with_one_line(tmp_path):
  """The binary itself (flags, main, exit status): a missing gin file."""
  workdir = tmp_path / 'w'
  result = _run_binary(['--gin_file=gin_configs/missing.gin',
                        f'--workdir={workdir}'], cwd=REPO)
  assert error_line(result.returncode, result.stdout, result.stderr).count(
      'missing.gin does not exist') == 1
  assert not workdir.exists()


@pytest.mark.parametrize('bindings, message', [
    (['TrialTrainer.epoch = 3'], 'epoch'),
    (['SubsetDesign.subset_ratio = 1.5'], 'subset_ratio'),
    (["load_dataset.name = 'no_such_dataset'"], 'no_such_dataset'),
])
def test_bad_input_exits_2_with_one_line(tmp_path, bindings, message):
  """What the binary's main does with bad bindings, in this process."""
  workdir = tmp_path / 'w'
  line = error_line(*run_in_process(lambda: train.run(
      str(workdir), [os.path.join(GIN_DIR, 'tiny.gin')], bindings,
      log=lambda _: None)))
  assert message in line
  assert not (workdir / 'trials').exists()


def test_an_unwritable_workdir_exits_2(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  line = error_line(*run_in_process(lambda: train.run(
      f'{blocker}/w', [os.path.join(GIN_DIR, 'tiny.gin')], [],
      log=lambda _: None)))
  assert 'Cannot write to --workdir' in line


@pytest.mark.slow
def test_packed_run_writes_the_same_records_as_one_model_per_step(
    tmp_path, digits_data_dir):
  gin_file = [os.path.join(GIN_DIR, 'tiny.gin')]
  base = ["SubsetDesign.design = 'independent'", 'SubsetDesign.num_trials = 5',
          'TrialTrainer.epochs = 1', "get_strategy.kind = 'one_device'"]
  alone = train.run(str(tmp_path / 'alone'), gin_file, base,
                    data_dir=digits_data_dir, log=lambda _: None)
  lines = []
  packed = train.run(str(tmp_path / 'packed'), gin_file,
                     base + ['TrialTrainer.models_per_step = 3'],
                     data_dir=digits_data_dir, log=lines.append)
  assert sorted(packed.trained) == [0, 1, 2, 3, 4]
  assert any('of a group of' in line for line in lines)
  # models_per_step does not change what a trial computes: same fingerprint,
  # so the two may even share a workdir.
  assert packed.fingerprint == alone.fingerprint
  a = loading.load(str(tmp_path / 'alone'), predictions=True)
  b = loading.load(str(tmp_path / 'packed'), predictions=True)
  np.testing.assert_array_equal(a.trial_indices, b.trial_indices)
  for field in ('masks', 'train_correct', 'test_correct', 'train_prob',
                'test_prob', 'train_margin', 'test_margin'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field),
                                  err_msg=field)
  together = [m['metrics']['trained_together'] for m in b.metadata]
  assert max(together) > 1


def test_group_jobs_packs_equal_step_counts_in_arrival_order():
  steps = {0: 16, 1: 17, 2: 16, 3: 16, 4: 17, 5: 15, 6: 16, 7: 16}
  jobs = [runs.Job(t, None, t) for t in steps]
  groups = runs.group_jobs(jobs, 3, lambda job: steps[job.index])
  assert [[job.index for job in g] for g in groups] == [
      [0, 2, 3], [1, 4], [5], [6, 7]]  # partial groups by first arrival
  for group in groups:
    assert len({steps[job.index] for job in group}) == 1
  single = runs.group_jobs(jobs, 1, lambda job: steps[job.index])
  assert [[job.index for job in g] for g in single] == [[t] for t in steps]
