"""Fine-tuning keras.applications backbones pretrained on ImageNet.

    TrialTrainer.model_fn = @pretrained
    pretrained.backbone = 'MobileNetV2'
    pretrained.weights_path = '/data/weights/mobilenetv2_notop.weights.h5'
    pretrained.image_size = 96
    Preprocessing.standardize = False

The model takes raw 0..255 pixels and applies, in Keras layers, what the
backbone's keras.applications `preprocess_input` does ('tf': x/127.5 - 1;
'torch': x/255, then ImageNet mean and std; 'caffe': RGB to BGR, minus the
ImageNet BGR mean; nothing where the model rescales its input itself), after
repeating grayscale to RGB and resizing to `image_size`. Then come the
backbone (one nested layer, 'backbone'), 'pool' (global average pooling: the
features), optional dropout and the head, a Dense layer named 'logits'.

Nothing is downloaded: `weights_path` is a local file, a `.weights.h5` that
`save_weights` wrote for the same backbone built with include_top=False (and
the same `backbone_kwargs`), or keras's cached `*notop.h5` file. The backbone
is declared pretrained (models.mark_pretrained): every trial starts from the
file's weights, only the head is drawn from the trial's seed, and the file's
sha256, not its path, enters the run's config fingerprint. Without a file the
backbone starts from a random init (for tests; TrialTrainer re-initialises
only layers with a `*_initializer` per weight, e.g. ResNets and DenseNets).
"""

import collections
import hashlib
import numbers
import os
import warnings

import gin
import h5py
import keras
from keras import layers
import numpy as np

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.training import models

# The digest of the file's content is fingerprinted instead (mark_pretrained).
config.not_fingerprinted('pretrained.weights_path')

# ImageNet statistics (keras.applications.imagenet_utils): RGB, 0..1 scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # 0..255 scale

# family: the keras.applications module whose preprocess_input the scaling
# reproduces; scaling: 'tf', 'torch', 'caffe', 'none' (the model rescales
# itself) or 'efficientnet' (itself, see _efficientnet_fix); min_side: the
# smallest input side keras.applications accepts.
Backbone = collections.namedtuple('Backbone', 'family scaling min_side')
BACKBONES = {
    **{n: Backbone('resnet', 'caffe', 32)
       for n in ('ResNet50', 'ResNet101', 'ResNet152')},
    **{n: Backbone('resnet_v2', 'tf', 32)
       for n in ('ResNet50V2', 'ResNet101V2', 'ResNet152V2')},
    'VGG16': Backbone('vgg16', 'caffe', 32),
    'VGG19': Backbone('vgg19', 'caffe', 32),
    'MobileNet': Backbone('mobilenet', 'tf', 32),
    'MobileNetV2': Backbone('mobilenet_v2', 'tf', 32),
    'MobileNetV3Small': Backbone('mobilenet_v3', 'none', 32),
    'MobileNetV3Large': Backbone('mobilenet_v3', 'none', 32),
    **{f'EfficientNetB{i}': Backbone('efficientnet', 'efficientnet', 32)
       for i in range(8)},
    **{f'EfficientNetV2{v}': Backbone('efficientnet_v2', 'none', 32)
       for v in ('B0', 'B1', 'B2', 'B3', 'S', 'M', 'L')},
    **{f'DenseNet{d}': Backbone('densenet', 'torch', 32)
       for d in (121, 169, 201)},
    **{f'ConvNeXt{s}': Backbone('convnext', 'none', 32)
       for s in ('Tiny', 'Small', 'Base', 'Large', 'XLarge')},
    'Xception': Backbone('xception', 'tf', 71),
    'InceptionV3': Backbone('inception_v3', 'tf', 75),
    'InceptionResNetV2': Backbone('inception_resnet_v2', 'tf', 75),
    'NASNetMobile': Backbone('nasnet', 'tf', 32),
}
TRAINABLE = ('all', 'head')
# The input layers compute in float32 also under mixed precision.
_SCALE = {'name': 'scale', 'dtype': 'float32'}
# Arguments of the keras.applications constructors that pretrained sets.
_RESERVED = ('include_top', 'weights', 'input_tensor', 'input_shape',
             'pooling', 'classes', 'classifier_activation', 'name',
             'include_preprocessing')


@keras.saving.register_keras_serializable(package='tf_memorization')
class ReverseChannels(layers.Layer):
  """Reverses the channel axis: RGB to BGR, as 'caffe' preprocessing does."""

  def call(self, inputs):
    return keras.ops.flip(inputs, axis=-1)

  def compute_output_shape(self, input_shape):
    return input_shape


def input_scaling(scaling):
  """Layers mapping raw RGB pixels (0..255) to the backbone's input scale.

  Args:
    scaling: 'tf', 'torch', 'caffe' (keras.applications preprocess_input's
      modes), or 'none' / 'efficientnet' (no layers: the backbone scales).
  """
  if scaling == 'tf':
    return [layers.Rescaling(1 / 127.5, offset=-1.0, **_SCALE)]
  if scaling == 'torch':  # (x / 255 - mean) / std
    std = 255.0 * np.asarray(IMAGENET_STD)
    offset = -255.0 * np.asarray(IMAGENET_MEAN) / std
    return [layers.Rescaling(list(1 / std), offset=list(offset), **_SCALE)]
  if scaling == 'caffe':  # BGR, minus the BGR mean
    offset = [-m for m in reversed(CAFFE_MEAN_BGR)]
    return [layers.Rescaling(1.0, offset=offset, **_SCALE),
            ReverseChannels(name='bgr', dtype='float32')]
  return []


def _efficientnet_fix(backbone):
  """keras's EfficientNetB* with weights='imagenet' divides the output of its
  Normalization layer by sqrt(ImageNet std) (tensorflow#49930), but not when
  built with weights=None as here. The same, applied to the raw pixels
  before the backbone: x' = c x + 255 m (1 - c), m the loaded mean."""
  norm = next(l for l in backbone.layers
              if isinstance(l, layers.Normalization))
  mean = np.reshape(np.asarray(norm.adapt_mean.numpy(), np.float64), -1)
  c = 1 / np.sqrt(np.asarray(IMAGENET_STD))
  return [layers.Rescaling(list(c), offset=list(255 * mean * (1 - c)),
                           **_SCALE)]


def _array_digest(array):
  array = np.asarray(array)
  digest = hashlib.sha256(repr(array.shape).encode())
  digest.update(np.ascontiguousarray(array, np.float64).tobytes())
  return digest.hexdigest()


# (realpath, size, mtime) -> (sha256 of the file, sorted digests of its
# arrays): each of TrialTrainer's model copies loads the same file.
_FILE_SUMMARIES = {}


def _stored_arrays(f):
  """The weight arrays keras's load_weights reads from h5py.File `f`."""
  if 'layer_names' not in f.attrs and 'model_weights' in f:
    f = f['model_weights']  # a legacy whole-model file
  if 'layer_names' in f.attrs:  # legacy h5: keras's *_notop.h5 files
    return [f[_text(layer)][_text(weight)]
            for layer in f.attrs['layer_names']
            for weight in f[_text(layer)].attrs['weight_names']]
  arrays = []  # a .weights.h5: every dataset is a variable
  f.visititems(lambda _, item: arrays.append(item)
               if isinstance(item, h5py.Dataset) else None)
  return arrays


def _text(name):
  return name.decode('utf8') if isinstance(name, bytes) else str(name)


def _file_summary(path):
  """(sha256 of the file's bytes, sorted (shape, digest) of its arrays)."""
  stat = os.stat(path)
  key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
  if key not in _FILE_SUMMARIES:
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        sha.update(block)
    with h5py.File(path, 'r') as f:
      _FILE_SUMMARIES[key] = (sha.hexdigest(), sorted(
          (tuple(a.shape), _array_digest(a[()])) for a in _stored_arrays(f)))
  return _FILE_SUMMARIES[key]


def _load(backbone, name, kwargs, side, path):
  """Loads `path` into `backbone`, checked; the file's sha256."""
  args = ''.join(f', {k}={v!r}' for k, v in sorted(kwargs.items()))
  fix = (f'Use a file of {name} built with include_top=False'
         f'{" and " + args[2:] if args else ""}: on a machine with network, '
         f'keras.applications.{name}(include_top=False, weights=\'imagenet\', '
         f'input_shape=({side}, {side}, 3){args}).save_weights('
         f'\'{name.lower()}_notop.weights.h5\'), or the *notop.h5 / '
         f'*no_top.h5 file of that model keras caches in ~/.keras/models.')
  where = f'pretrained.weights_path = {path!r}'
  if not os.path.isfile(path):
    raise errors.ConfigError(f'{where}: no such file. {fix}')
  try:
    sha, stored = _file_summary(path)
  except (OSError, KeyError, ValueError) as e:
    raise errors.ConfigError(f'{where} is not a keras weights file ({e}). '
                             f'{fix}') from e
  weights = backbone.get_weights()
  expected = sorted(w.shape for w in weights)
  if sorted(shape for shape, _ in stored) != expected:
    raise errors.ConfigError(
        f'{where} does not fit pretrained.backbone = {name!r}'
        f'{" with " + args[2:] if args else ""}: it holds {len(stored)} '
        f'arrays of {sum(int(np.prod(s)) for s, _ in stored):,} values, the '
        f'backbone has {len(weights)} weights of '
        f'{sum(w.size for w in weights):,}. {fix}')
  try:
    with warnings.catch_warnings():  # keras warns of containers it skips
      warnings.simplefilter('ignore')
      backbone.load_weights(path)
  except Exception as e:  # pylint: disable=broad-except
    reason = ' '.join(str(e).split())[:300]
    raise errors.ConfigError(f'{where} does not fit pretrained.backbone = '
                             f'{name!r} ({reason}). {fix}') from e
  loaded = sorted((w.shape, _array_digest(w)) for w in backbone.get_weights())
  if loaded != stored:
    raise errors.ConfigError(
        f'{where}: loading it into pretrained.backbone = {name!r} left '
        f'weights that are not the file\'s (another layout or version of '
        f'the model). {fix}')
  return sha


def _set_trainable(backbone, trainable, name):
  """'all', 'head' (backbone frozen) or the last `trainable` weighted
  layers of the backbone; frozen BatchNorms run in inference mode."""
  if trainable == 'all':
    return
  if trainable == 'head':
    backbone.trainable = False
    return
  weighted = [layer for layer in backbone.layers if layer.weights]
  if trainable > len(weighted):
    raise errors.ConfigError(
        f'pretrained.trainable = {trainable} exceeds the {len(weighted)} '
        f'layers with weights of {name}; bind \'all\' to train them all.')
  for layer in weighted[:len(weighted) - trainable]:
    layer.trainable = False


@gin.configurable
def pretrained(input_shape, num_classes, backbone='MobileNetV2',
               weights_path=None, image_size=None, trainable='all',
               dropout=0.0, weight_decay=0.0, backbone_kwargs=None,
               frozen_batchnorm='auto'):
  """A keras.applications backbone with a new linear head (module docstring).

  Args:
    input_shape: (H, W, C) of the images, C 1 (repeated to RGB) or 3; raw
      pixels on the 0..255 scale (bind Preprocessing.standardize = False).
    num_classes: number of logits.
    backbone: a name in BACKBONES, e.g. 'ResNet50', 'MobileNetV2'.
    weights_path: the backbone's pretrained weights, a local .weights.h5 or
      keras's *_notop.h5 file; None: a random init (for tests).
    image_size: resize the images to image_size x image_size inside the
      model (None: keep H x W); at least the backbone's minimum side.
    trainable: 'all' (fine-tune everything), 'head' (the backbone frozen,
      its BatchNorms in inference mode) or an int N >= 0 (only the last N
      layers of the backbone that hold weights train, and the head).
    dropout: dropout rate on the features before the head.
    weight_decay: L2 coefficient on the head's kernel.
    backbone_kwargs: more arguments of the keras.applications constructor,
      e.g. {'alpha': 0.35} for MobileNetV2.
    frozen_batchnorm: freeze the backbone's BatchNormalization layers
      (Keras's advice for fine-tuning): frozen, they run in inference mode
      and keep the pretrained statistics, scale and offset, instead of
      normalising with each small batch's while their slow moving averages
      (momentum 0.999 in keras.applications) fall behind the changing
      weights. 'auto': when weights_path is given (a random init needs
      batch statistics).

  Returns:
    An uncompiled keras.Model with float32 logits.
  """
  errors.choice('pretrained.backbone', backbone, tuple(BACKBONES))
  errors.string('pretrained.weights_path', weights_path, allow_none=True)
  image_size = errors.integer('pretrained.image_size', image_size, minimum=1,
                              allow_none=True)
  if trainable not in TRAINABLE and (
      isinstance(trainable, bool) or not isinstance(trainable, numbers.Integral)
      or trainable < 0):
    raise errors.ConfigError(f'pretrained.trainable must be \'all\', \'head\' '
                             f'or an integer >= 0, got {trainable!r}.')
  dropout = errors.number('pretrained.dropout', dropout, minimum=0, below=1)
  weight_decay = errors.number('pretrained.weight_decay', weight_decay,
                               minimum=0)
  if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
    raise errors.ConfigError(f'pretrained.backbone_kwargs must be a dict, '
                             f'got {backbone_kwargs!r}.')
  kwargs = dict(backbone_kwargs or {})
  reserved = sorted(set(kwargs) & set(_RESERVED))
  if reserved:
    raise errors.ConfigError(f'pretrained.backbone_kwargs must not set '
                             f'{reserved}: pretrained sets them.')
  if frozen_batchnorm == 'auto':
    frozen_batchnorm = weights_path is not None
  errors.boolean('pretrained.frozen_batchnorm', frozen_batchnorm)
  spec = BACKBONES[backbone]
  height, width, channels = tuple(input_shape)
  if channels not in (1, 3):
    raise errors.UserError(f'pretrained needs images with 1 or 3 channels, '
                           f'the dataset\'s have {channels}.')
  if image_size is None and (height is None or width is None):
    raise errors.ConfigError('pretrained.image_size is required: the images '
                             'have no fixed size.')
  size = (image_size, image_size) if image_size else (height, width)
  if min(size) < spec.min_side:
    raise errors.ConfigError(
        f'{backbone} needs inputs of at least {spec.min_side}x'
        f'{spec.min_side}, the model\'s are {size[0]}x{size[1]}: bind '
        f'pretrained.image_size = {spec.min_side} (or more).')
  try:
    net = getattr(keras.applications, backbone)(
        include_top=False, weights=None, pooling=None,
        input_shape=(*size, 3), **kwargs)
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(f'pretrained.backbone_kwargs = {kwargs!r} do not '
                             f'fit {backbone}: {e}') from e
  net.name = 'backbone'
  digest = None
  if weights_path is not None:
    digest = _load(net, backbone, kwargs, size[0], weights_path)
  _set_trainable(net, trainable, backbone)
  if frozen_batchnorm:
    for layer in net._flatten_layers(include_self=False):  # pylint: disable=protected-access
      if isinstance(layer, layers.BatchNormalization):
        layer.trainable = False

  inputs = keras.Input(shape=tuple(input_shape), name='image')
  x = inputs
  if size != (height, width):
    x = layers.Resizing(*size, name='resize', dtype='float32')(x)
  if channels == 1:
    x = layers.Concatenate(name='rgb', dtype='float32')([x, x, x])
  if spec.scaling == 'efficientnet' and digest is not None:
    scaling = _efficientnet_fix(net)
  else:
    scaling = input_scaling(spec.scaling)
  for layer in scaling:
    x = layer(x)
  x = net(x)
  x = layers.GlobalAveragePooling2D(name='pool')(x)
  if dropout:
    x = layers.Dropout(dropout, name='dropout')(x)
  logits = layers.Dense(
      num_classes, dtype='float32', name='logits',
      kernel_regularizer=(keras.regularizers.L2(weight_decay)
                          if weight_decay else None))(x)
  model = keras.Model(inputs, logits, name=f'{backbone.lower()}_finetune')
  if digest is not None:
    models.mark_pretrained(model, ['backbone'],
                           digests=[f'{backbone}:sha256:{digest}'])
  return model
