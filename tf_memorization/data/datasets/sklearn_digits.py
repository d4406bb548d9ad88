"""scikit-learn's bundled handwritten digits as a tfds dataset (offline, real).

The UCI optical digits (1,797 grey-scale 8x8 images, 10 classes) ship inside the
scikit-learn wheel, so this dataset prepares with no network. It is the demo's
dataset and lets the whole pipeline run on a machine with no internet.

Split (fixed and stratified, no random numbers involved): within each class,
examples are taken in scikit-learn's original order and every fifth one (rank
4, 9, 14, ... within its class) goes to `test`, the rest to `train`. That gives
1,442 train and 355 test examples, every class split 4:1 (up to rounding).
tfds stores examples in its own shuffled order; `index` says where each came from.

Features: `image` uint8 [8, 8, 1] (the 0..16 intensities scaled to 0..255),
`label` (0..9) and `index`, the example's position in scikit-learn's order, so
scores can be joined back to `sklearn.datasets.load_digits()`.
"""

import numpy as np
import tensorflow_datasets as tfds

TEST_EVERY = 5  # every fifth example of each class is a test example


def split_indices():
  """(train_indices, test_indices) into scikit-learn's order, as documented."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  labels = load_digits().target
  rank_in_class = np.zeros(len(labels), dtype=np.int64)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    rank_in_class[members] = np.arange(len(members))
  is_test = rank_in_class % TEST_EVERY == TEST_EVERY - 1
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """UCI handwritten digits from scikit-learn, with a fixed stratified split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
            'index': np.int64,
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
        citation=('@misc{optdigits, author={Alpaydin, E. and Kaynak, C.}, '
                  'title={Optical Recognition of Handwritten Digits}, '
                  'year={1998}, publisher={UCI Machine Learning Repository}}'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with scikit-learn
    train, test = split_indices()
    return {'train': self._generate_examples(train),
            'test': self._generate_examples(test)}

  def _generate_examples(self, indices):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for i in indices:
      yield int(i), {'image': images[i][..., None],
                     'label': int(digits.target[i]),
                     'index': int(i)}
