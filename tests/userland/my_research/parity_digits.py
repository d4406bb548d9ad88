"""A user's own tfds builder that prepares from local files: the UCI digits
inside scikit-learn, labelled by parity (0: even digit, 1: odd digit).

Registered with tfds when imported (a gin `import my_research.parity_digits`
line does that); `load_dataset.name = 'parity_digits'` then selects it.
"""

import numpy as np
import tensorflow_datasets as tfds


class ParityDigits(tfds.core.GeneratorBasedBuilder):
  """Digits 8x8, two classes (even, odd); every fourth example is a test one."""

  VERSION = tfds.core.Version('0.1.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(names=['even', 'odd']),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # local files only
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target % 2
    # A few hundred examples keep the tests fast.
    chosen = np.arange(0, len(labels), 3)
    test = chosen[chosen % 4 == 0]
    train = chosen[chosen % 4 != 0]
    return {'train': self._generate_examples(images, labels, train),
            'test': self._generate_examples(images, labels, test)}

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {'image': images[i][..., None], 'label': int(labels[i])}
