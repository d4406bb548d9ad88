"""A user's builder that downloads its data: preparing it needs a network
(the URL is bound by gin, so a test can point it at a host that refuses)."""

import gin
import tensorflow_datasets as tfds


@gin.configurable
def remote_url(url='http://127.0.0.1:9/remote_data.npz'):
  return url


class RemoteData(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('0.1.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=2),
        }))

  def _split_generators(self, dl_manager):
    path = dl_manager.download(remote_url())
    raise AssertionError(f'the download of {path} should have been refused')

  def _generate_examples(self):
    yield from ()
