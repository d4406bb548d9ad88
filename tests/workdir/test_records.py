"""Tests for workdir/records.py: writing, reading and validating trials."""

import io
import json
import os

import numpy as np
import pytest

from tf_memorization.core import files
from tf_memorization.data.pipelines import Dataset, Split
from tf_memorization.stats import masks
from tf_memorization.training.trainer import TrialResult
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

N_TRAIN = 13  # not a multiple of 8: the packed mask has padding bits
N_TEST = 5
NUM_CLASSES = 3

def make_dataset(train_labels=None):
  """A tiny in-memory Dataset of 13 train and 5 test 2x2 grey images."""
  rng = np.random.default_rng(0)
  if train_labels is None:
    train_labels = np.arange(N_TRAIN) % NUM_CLASSES
  train = Split(images=rng.integers(0, 256, (N_TRAIN, 2, 2, 1), np.uint8),
                labels=np.asarray(train_labels, np.int64),
                ids=np.array([f'train__{i}' for i in range(N_TRAIN)]))
  test = Split(images=rng.integers(0, 256, (N_TEST, 2, 2, 1), np.uint8),
               labels=np.arange(N_TEST, dtype=np.int64) % NUM_CLASSES,
               ids=np.array([f'test__{i}' for i in range(N_TEST)]))
  return Dataset(name='tiny', version='1.0.0', num_classes=NUM_CLASSES,
                 train=train, test=test)


def _predictions(rng, labels):
  """Random predictions of `labels` with true-class probabilities and
  margins that agree with them (as one set of logits gives)."""
  pred = rng.integers(0, NUM_CLASSES, len(labels)).astype(np.int32)
  correct = pred == labels
  spread = rng.random(len(labels))
  prob = np.where(correct, 0.5 + 0.5 * spread, 0.5 * spread)
  margin = np.abs(rng.normal(0, 3, len(labels))) * np.where(correct, 1, -1)
  return pred, prob.astype(np.float32), margin.astype(np.float32)


def make_result(seed, n=N_TRAIN, n_test=N_TEST, train_labels=None):
  """A TrialResult with random predictions, probabilities and margins (of
  `train_labels`, default the dataset's)."""
  rng = np.random.default_rng(seed)
  dataset = make_dataset()
  if train_labels is None:
    train_labels = dataset.train.labels
  train = _predictions(rng, train_labels[np.arange(n) % N_TRAIN])
  test = _predictions(rng, dataset.test.labels[np.arange(n_test) % N_TEST])
  return TrialResult(
      train_pred=train[0], train_prob=train[1], train_margin=train[2],
      test_pred=test[0], test_prob=test[1], test_margin=test[2],
      metrics={'train_accuracy': 0.5, 'seed_used': seed})


# Records name the subset design their masks come from; loading checks that
# trial t's mask and seed are that design's.
DESIGN = masks.SubsetDesign(num_trials=8, subset_ratio=0.6, seed=3)


def make_mask(t, n=N_TRAIN):
  return DESIGN.mask(n, t)


def metadata(dataset, fingerprint='f00dfeed', seed=1, info=None):
  return {'fingerprint': fingerprint, 'seed': seed,
          'dataset': info or records.write_dataset_file('', dataset,
                                                        write=False),
          'design': DESIGN.fingerprint_fields()}


@pytest.fixture
def workdir(tmp_path):
  """A workdir with dataset.npz written (no trials yet)."""
  path = str(tmp_path / 'run')
  records.write_dataset_file(path, make_dataset())
  return path


def write_trial(workdir, t, fingerprint='f00dfeed', n=N_TRAIN, info=None,
                train_labels=None):
  """Writes trial t (mask and result derived from t); returns them."""
  mask, result = make_mask(t, n), make_result(t, n, train_labels=train_labels)
  assert records.write_record(workdir, t, mask, result,
                              metadata(make_dataset(), fingerprint,
                                       seed=DESIGN.trial_seed(t), info=info))
  return mask, result


def rewrite_npz(path, **replace):
  """Rewrites the .npz at path with some arrays replaced (metadata kept)."""
  with np.load(path, allow_pickle=False) as npz:
    arrays = {name: npz[name] for name in npz.files}
  arrays.update(replace)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


# ------------------------------------------------------------------ round trip


def test_round_trip(workdir):
  """What write_record stores, load returns (indexed and sorted by trial)."""
  written = {t: write_trial(workdir, t) for t in (5, 0, 2)}
  loaded = loading.load(workdir, predictions=True)
  dataset = make_dataset()

  np.testing.assert_array_equal(loaded.trial_indices, [0, 2, 5])
  assert loaded.num_trials == 3
  assert loaded.masks.shape == (3, N_TRAIN)
  assert loaded.fingerprint == 'f00dfeed'
  assert loaded.dataset_info['name'] == 'tiny'
  assert loaded.dataset_info['num_train'] == N_TRAIN
  np.testing.assert_array_equal(loaded.train_labels, dataset.train.labels)
  np.testing.assert_array_equal(loaded.test_labels, dataset.test.labels)
  np.testing.assert_array_equal(loaded.train_ids, dataset.train.ids)
  np.testing.assert_array_equal(loaded.test_ids, dataset.test.ids)

  for row, t in enumerate([0, 2, 5]):
    mask, result = written[t]
    np.testing.assert_array_equal(loaded.masks[row], mask)
    np.testing.assert_array_equal(loaded.train_pred[row], result.train_pred)
    np.testing.assert_array_equal(loaded.test_pred[row], result.test_pred)
    np.testing.assert_array_equal(
        loaded.train_correct[row], result.train_pred == dataset.train.labels)
    np.testing.assert_array_equal(
        loaded.test_correct[row], result.test_pred == dataset.test.labels)
    # float16 keeps about 3 significant digits.
    np.testing.assert_allclose(loaded.train_prob[row], result.train_prob,
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(loaded.test_prob[row], result.test_prob,
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(loaded.train_margin[row], result.train_margin,
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(loaded.test_margin[row], result.test_margin,
                               rtol=1e-3, atol=1e-3)
    meta = loaded.metadata[row]
    assert meta['trial_index'] == t
    assert meta['seed'] == DESIGN.trial_seed(t)
    assert meta['fingerprint'] == 'f00dfeed'
    assert meta['num_train'] == N_TRAIN and meta['num_test'] == N_TEST
    assert meta['metrics'] == result.metrics
    assert len(meta['checksum']) == 64
    int(meta['checksum'], 16)  # a hex sha256
    assert loaded.paths[row] == records.record_path(workdir, t)

  assert loaded.train_prob.dtype == np.float16
  assert loaded.train_margin.dtype == np.float16
  assert loaded.masks.dtype == bool
  assert loaded.train_correct.dtype == bool


def test_load_without_predictions_omits_them(workdir):
  """predictions=False (the default) returns no predicted classes."""
  write_trial(workdir, 0)
  loaded = loading.load(workdir)
  assert loaded.train_pred is None and loaded.test_pred is None


def test_load_subset_of_trials(workdir):
  """load(trial_indices=...) reads just those trials, in sorted order."""
  written = {t: write_trial(workdir, t) for t in range(4)}
  loaded = loading.load(workdir, trial_indices=[3, 1])
  np.testing.assert_array_equal(loaded.trial_indices, [1, 3])
  np.testing.assert_array_equal(loaded.masks[0], written[1][0])
  np.testing.assert_array_equal(loaded.masks[1], written[3][0])
  assert [m['trial_index'] for m in loaded.metadata] == [1, 3]
  with pytest.raises(records.RecordError, match='7'):
    loading.load(workdir, trial_indices=[1, 7])


def test_write_record_refuses_to_overwrite(workdir):
  """A second write of a trial returns False and leaves the first intact."""
  mask, result = write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  with open(path, 'rb') as f:
    before = f.read()
  dataset = make_dataset()
  assert records.record_exists(workdir, 0)
  assert not records.write_record(workdir, 0, ~mask, make_result(99),
                                  metadata(dataset, 'other'))
  with open(path, 'rb') as f:
    assert f.read() == before
  loaded = loading.load(workdir, predictions=True)
  np.testing.assert_array_equal(loaded.masks[0], mask)
  np.testing.assert_array_equal(loaded.train_pred[0], result.train_pred)
  assert loaded.fingerprint == 'f00dfeed'


def test_no_temporary_files_left(workdir):
  """Successful and refused writes leave no *.tmp-* files behind."""
  write_trial(workdir, 0)
  write_trial(workdir, 1)
  dataset = make_dataset()
  records.write_record(workdir, 1, make_mask(1), make_result(1),
                       metadata(dataset))  # refused: exists
  records.write_dataset_file(workdir, dataset)  # already there: a check
  names = os.listdir(os.path.join(workdir, files.TRIALS_DIR))
  assert sorted(names) == ['trial_000000.npz', 'trial_000001.npz']
  assert not [n for n in os.listdir(workdir) if '.tmp-' in n]


def test_list_records_ignores_tmp_and_unrelated_files(workdir):
  """Only trial_NNNNNN.npz names (6 or more digits) count as records."""
  assert records.list_records(workdir) == {}
  trials = os.path.join(workdir, files.TRIALS_DIR)
  os.makedirs(trials)
  for name in ['trial_000004.npz', 'trial_1234567.npz',
               'trial_000003.npz.tmp-0123abcd', 'trial_3.npz', 'notes.txt',
               'trial_000005.npz.bak', 'xtrial_000006.npz']:
    with open(os.path.join(trials, name), 'wb') as f:
      f.write(b'')
  assert records.list_records(workdir) == {
      4: os.path.join(trials, 'trial_000004.npz'),
      1234567: os.path.join(trials, 'trial_1234567.npz')}
  assert list(records.list_records(workdir)) == [4, 1234567]
  assert records.list_records(os.path.join(workdir, 'absent')) == {}


# ------------------------------------------------------------- corrupt records


def test_truncated_to_zero_bytes_is_a_record_error(workdir):
  """An empty record file is reported, naming the file."""
  write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  open(path, 'wb').close()
  with pytest.raises(records.RecordError, match='trial_000000.npz'):
    loading.load(workdir)


@pytest.mark.parametrize('keep', ['half', 'all_but_10'])
def test_truncated_record_is_a_record_error(workdir, keep):
  """A record cut short (a killed copy) is reported, naming the file."""
  write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  with open(path, 'rb') as f:
    payload = f.read()
  cut = len(payload) // 2 if keep == 'half' else len(payload) - 10
  with open(path, 'wb') as f:
    f.write(payload[:cut])
  with pytest.raises(records.RecordError, match='trial_000000.npz'):
    loading.load(workdir)


def test_read_metadata_of_truncated_record_is_a_record_error(workdir):
  """read_metadata reports a truncated record as a RecordError too."""
  write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  with open(path, 'rb') as f:
    payload = f.read()
  with open(path, 'wb') as f:
    f.write(payload[:len(payload) // 2])
  with pytest.raises(records.RecordError, match='trial_000000.npz'):
    records.read_metadata(path)


def test_altered_array_fails_checksum(workdir):
  """Changing one array but keeping the old metadata fails the checksum."""
  write_trial(workdir, 0)
  write_trial(workdir, 1)
  path = records.record_path(workdir, 1)
  with np.load(path, allow_pickle=False) as npz:
    train_pred = npz['train_pred'].copy()
  train_pred[0] = (train_pred[0] + 1) % NUM_CLASSES
  rewrite_npz(path, train_pred=train_pred)
  with pytest.raises(records.RecordError, match='trial_000001.npz.*checksum'):
    loading.load(workdir)
  # The unaltered trial alone still loads.
  assert loading.load(workdir, trial_indices=[0]).num_trials == 1


def test_record_missing_an_array_is_a_record_error(workdir):
  """A .npz without the record's arrays is not accepted as a record."""
  write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  with np.load(path, allow_pickle=False) as npz:
    arrays = {n: npz[n] for n in npz.files if n != 'test_margin'}
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  with pytest.raises(records.RecordError, match='test_margin'):
    loading.load(workdir)


def test_records_are_loaded_without_pickle(workdir, tmp_path):
  """An object array in a record is refused, and its pickle never runs."""
  write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  sentinel = tmp_path / 'pickle_ran'

  class Payload:
    def __reduce__(self):
      return (os.mkdir, (str(sentinel),))

  rewrite_npz(path, train_pred=np.array([Payload()] * N_TRAIN, dtype=object))
  with pytest.raises(records.RecordError, match='trial_000000.npz'):
    loading.load(workdir)
  assert not sentinel.exists()


def test_mixed_fingerprints_are_refused(workdir):
  """Records of two configs in one workdir: the error names both and a file."""
  write_trial(workdir, 0, fingerprint='aaaa1111')
  write_trial(workdir, 1, fingerprint='aaaa1111')
  write_trial(workdir, 2, fingerprint='bbbb2222')
  with pytest.raises(records.RecordError) as info:
    loading.load(workdir)
  message = str(info.value)
  assert 'aaaa1111' in message and 'bbbb2222' in message
  assert 'trial_000002.npz' in message
  # Each config on its own is consistent.
  assert loading.load(workdir, trial_indices=[0, 1]).fingerprint == 'aaaa1111'


def test_record_of_other_dataset_size_is_refused(workdir):
  """A record with more train examples than dataset.npz is refused."""
  write_trial(workdir, 0)
  write_trial(workdir, 1, n=N_TRAIN + 1)
  with pytest.raises(records.RecordError, match='trial_000001.npz'):
    loading.load(workdir)


def test_renamed_record_is_refused(workdir):
  """A record whose metadata names another trial than its file name."""
  write_trial(workdir, 0)
  os.rename(records.record_path(workdir, 0), records.record_path(workdir, 3))
  with pytest.raises(records.RecordError, match='trial_000003.npz'):
    loading.load(workdir)


def test_missing_dataset_file(tmp_path):
  """Records without W/dataset.npz: the error names the missing file."""
  workdir = str(tmp_path / 'run')
  write_trial(workdir, 0)
  with pytest.raises(records.RecordError, match='dataset.npz'):
    loading.load(workdir)


def test_no_records(workdir):
  """A workdir with no trials (no trials dir, or an empty one) is an error."""
  with pytest.raises(records.RecordError, match='no trial records'):
    loading.load(workdir)
  os.makedirs(os.path.join(workdir, files.TRIALS_DIR))
  with pytest.raises(records.RecordError, match='no trial records'):
    loading.load(workdir)


# ---------------------------------------------------------------- dataset.npz


def test_dataset_file_round_trip(workdir):
  """dataset.npz holds the labels and ids, and a description of the data."""
  dataset = make_dataset()
  arrays, info = records.read_dataset_file(workdir)
  np.testing.assert_array_equal(arrays['train_labels'], dataset.train.labels)
  np.testing.assert_array_equal(arrays['original_train_labels'],
                                dataset.train.labels)
  np.testing.assert_array_equal(arrays['test_labels'], dataset.test.labels)
  np.testing.assert_array_equal(arrays['train_ids'], dataset.train.ids)
  np.testing.assert_array_equal(arrays['test_ids'], dataset.test.ids)
  for key, value in dataset.describe().items():
    assert info[key] == value
  assert info['image_shape'] == [2, 2, 1]


def test_dataset_file_is_written_once_and_then_checked(workdir):
  """Rewriting with the same data is a no-op; other labels are refused."""
  again = records.write_dataset_file(workdir, make_dataset())
  _, info = records.read_dataset_file(workdir)
  assert again['checksum'] == info['checksum']

  other_labels = (np.arange(N_TRAIN) + 1) % NUM_CLASSES
  with pytest.raises(records.RecordError, match='dataset.npz'):
    records.write_dataset_file(workdir, make_dataset(other_labels))
  # Training on noisy labels is another run too.
  with pytest.raises(records.RecordError):
    records.write_dataset_file(workdir, make_dataset(),
                               train_labels=other_labels)
  # The file still describes the original data.
  arrays, _ = records.read_dataset_file(workdir)
  np.testing.assert_array_equal(arrays['train_labels'],
                                make_dataset().train.labels)


def test_noisy_train_labels_are_what_correctness_uses(tmp_path):
  """With train_labels given, train_correct compares against those labels."""
  workdir = str(tmp_path / 'run')
  dataset = make_dataset()
  noisy = (dataset.train.labels + 1) % NUM_CLASSES
  info = records.write_dataset_file(workdir, dataset, train_labels=noisy)
  _, result = write_trial(workdir, 0, info=info, train_labels=noisy)
  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.train_labels, noisy)
  np.testing.assert_array_equal(loaded.train_correct[0],
                                result.train_pred == noisy)
  arrays, _ = records.read_dataset_file(workdir)
  np.testing.assert_array_equal(arrays['original_train_labels'],
                                dataset.train.labels)


def test_altered_dataset_file_fails_checksum(workdir):
  """Editing dataset.npz's labels (keeping its info) is detected."""
  path = os.path.join(workdir, files.DATASET_FILE)
  with np.load(path, allow_pickle=False) as npz:
    labels = npz['test_labels'].copy()
  labels[0] += 1
  rewrite_npz(path, test_labels=labels)
  with pytest.raises(records.RecordError, match='checksum'):
    records.read_dataset_file(workdir)


def test_fingerprint_is_stable_and_order_independent():
  """fingerprint() hashes the config's content, not its key order."""
  a = records.fingerprint({'x': 1, 'y': [1, 2], 'z': {'b': 2, 'a': 1}})
  b = records.fingerprint({'z': {'a': 1, 'b': 2}, 'y': [1, 2], 'x': 1})
  assert a == b and len(a) == 16
  assert records.fingerprint({'x': 2, 'y': [1, 2], 'z': {'a': 1, 'b': 2}}) != a


def test_metadata_is_json(workdir):
  """The stored metadata is a plain JSON string (read without pickle)."""
  write_trial(workdir, 0)
  path = records.record_path(workdir, 0)
  with open(path, 'rb') as f:
    payload = f.read()
  with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
    meta = json.loads(str(npz['metadata']))
    assert npz['train_pred'].dtype == np.int16  # 3 classes fit in int16
    # 13 mask bits packed into 2 bytes.
    assert npz['mask'].dtype == np.uint8 and npz['mask'].shape == (2,)
  assert meta == records.read_metadata(path)
  assert meta['format_version'] == records.FORMAT_VERSION
