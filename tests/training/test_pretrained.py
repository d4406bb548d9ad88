"""Tests for tf_memorization.training.pretrained: keras.applications backbones.

Every backbone here is a MobileNet (v1) with alpha 0.25 at 32x32 (0.2M
parameters, the quickest keras.applications model to trace), built with
weights=None; its "pretrained" weights are a seeded
perturbation of a fresh init, saved to a temporary .weights.h5, so they differ
from anything an initializer draws. Nothing is downloaded.
"""

import functools
import gc
import hashlib
import os
import shutil

import gin
import h5py
import keras
from keras.src.legacy.saving import legacy_h5_format
import numpy as np
import pytest
import tensorflow as tf

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.data import pipelines
from tf_memorization.estimation import pipeline
from tf_memorization import train
from tf_memorization.training import models
from tf_memorization.training import pretrained
from tf_memorization.training import strategy as strategy_lib
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import records

from conftest import GIN_DIR, run_in_process

BACKBONE = 'MobileNet'
KWARGS = {'alpha': 0.25}
SIDE = 32
TINY = os.path.join(GIN_DIR, 'tiny.gin')


def _backbone(name=BACKBONE, include_top=False, **kwargs):
  kwargs = kwargs or dict(KWARGS)
  return getattr(keras.applications, name)(
      include_top=include_top, weights=None, input_shape=(SIDE, SIDE, 3),
      **kwargs)


def _perturb(model, seed):
  """Seeded new values of every weight; the weights in model.weights order.

  The kernels are perturbed, then the BatchNorm statistics set to those of
  one batch of random images, as a pretrained network's fit its inputs (left
  at their init, the frozen statistics saturate the features).
  """
  rng = np.random.default_rng(seed)
  model.set_weights([w + rng.normal(0.0, 0.02, w.shape).astype(w.dtype)
                     for w in model.get_weights()])
  norms = [l for l in model.layers
           if isinstance(l, keras.layers.BatchNormalization)]
  momentums = [l.momentum for l in norms]
  for layer in norms:
    layer.momentum = 0.0  # the moving statistics become the batch's
  model(rng.uniform(-1, 1, (64, SIDE, SIDE, 3)).astype(np.float32),
        training=True)
  for layer, momentum in zip(norms, momentums):
    layer.momentum = momentum
  return model.get_weights()


def _save(model, path):
  model.save_weights(str(path))
  return str(path)


@pytest.fixture(autouse=True, scope='module')
def _fresh_keras():
  """keras.applications backbones leave Keras's global graph state large;
  later modules of the suite run slower with it, so it is cleared."""
  yield
  keras.backend.clear_session()
  gc.collect()


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  """(path of the 'pretrained' .weights.h5, its arrays in weight order)."""
  net = _backbone()
  values = _perturb(net, seed=1)
  path = tmp_path_factory.mktemp('weights') / 'mobilenet_notop.weights.h5'
  return _save(net, path), values


@pytest.fixture(scope='module')
def other_weights(tmp_path_factory):
  """Another file of the same backbone with other content."""
  net = _backbone()
  _perturb(net, seed=2)
  path = tmp_path_factory.mktemp('other') / 'mobilenet_notop.weights.h5'
  return _save(net, path)


def _build(path, input_shape=(SIDE, SIDE, 3), **kwargs):
  kwargs = {'backbone': BACKBONE, 'backbone_kwargs': KWARGS, **kwargs}
  return pretrained.pretrained(input_shape, 3, weights_path=path, **kwargs)


def _sha256(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _equal(a, b):
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------- the model


@pytest.mark.parametrize('name', sorted(pretrained.BACKBONES))
def test_scaling_equals_preprocess_input(name):
  spec = pretrained.BACKBONES[name]
  assert callable(getattr(keras.applications, name))
  x = np.random.default_rng(0).uniform(0, 255, (4, 5, 6, 3)).astype(np.float32)
  expected = getattr(keras.applications, spec.family).preprocess_input(
      x.copy())
  scaling = pretrained.input_scaling(spec.scaling)
  if spec.scaling in ('none', 'efficientnet'):  # the backbone scales itself
    assert not scaling
    np.testing.assert_array_equal(expected, x)
    return
  assert spec.scaling in ('tf', 'torch', 'caffe')
  y = x
  for layer in scaling:
    y = layer(y)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_model_resizes_repeats_gray_and_scales(weights):
  model = _build(weights[0], input_shape=(8, 8, 1), image_size=SIDE,
                 dropout=0.2, weight_decay=1e-3)
  assert [l.name for l in model.layers] == [
      'image', 'resize', 'rgb', 'scale', 'backbone', 'pool', 'dropout',
      'logits']
  x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(
      np.float32)
  rgb = np.repeat(tf.image.resize(x, (SIDE, SIDE)).numpy(), 3, axis=-1)
  expected = keras.applications.mobilenet.preprocess_input(rgb)
  scaled = keras.Model(model.input, model.get_layer('scale').output)(x)
  np.testing.assert_allclose(np.asarray(scaled), expected, atol=1e-5)
  assert model(x).dtype == tf.float32 and model(x).shape == (2, 3)
  assert model.get_layer('pool').output.shape == (None, 256)
  assert model.get_layer('logits').kernel_regularizer.l2 == pytest.approx(1e-3)
  assert len(model.losses) == 1


def test_caffe_backbones_get_bgr_inputs():
  model = pretrained.pretrained((SIDE, SIDE, 3), 3, backbone='VGG16')
  x = np.random.default_rng(0).uniform(0, 255, (2, SIDE, SIDE, 3)).astype(
      np.float32)
  bgr = keras.Model(model.input, model.get_layer('bgr').output)(x)
  np.testing.assert_allclose(
      np.asarray(bgr), keras.applications.vgg16.preprocess_input(x.copy()),
      atol=1e-4)
  assert model(x).shape == (2, 3)


def test_mixed_precision_keeps_input_scaling_and_logits_float32(weights):
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    model = _build(weights[0], input_shape=(8, 8, 1), image_size=SIDE)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert model.get_layer('backbone').compute_dtype == 'bfloat16'
  for name in ('resize', 'rgb', 'scale'):
    assert model.get_layer(name).compute_dtype == 'float32'
  assert model(np.zeros((2, 8, 8, 1), np.float32)).dtype == tf.float32


@pytest.mark.slow
def test_efficientnet_applies_the_imagenet_rescaling(tmp_path):
  # keras's EfficientNetB0(weights='imagenet') multiplies its Normalization
  # output by 1/sqrt(ImageNet std); a weights=None build does not.
  net = keras.applications.EfficientNetB0(
      include_top=False, weights=None, input_shape=(SIDE, SIDE, 3))
  norm = next(l for l in net.layers
              if isinstance(l, keras.layers.Normalization))
  norm.set_weights([np.asarray(pretrained.IMAGENET_MEAN, np.float32),
                    np.asarray(pretrained.IMAGENET_STD, np.float32),
                    np.zeros((), norm.count.dtype)])
  path = _save(net, tmp_path / 'efficientnetb0_notop.weights.h5')
  model = pretrained.pretrained((SIDE, SIDE, 3), 3, backbone='EfficientNetB0',
                                weights_path=path)
  backbone = model.get_layer('backbone')
  inner = next(l for l in backbone.layers
               if isinstance(l, keras.layers.Normalization))
  normalized = keras.Model(backbone.input, inner.output)
  x = np.random.default_rng(0).uniform(0, 255, (2, SIDE, SIDE, 3)).astype(
      np.float32)
  scaled = keras.Model(model.input, model.get_layer('scale').output)(x)
  expected = normalized(x) / np.sqrt(pretrained.IMAGENET_STD)
  np.testing.assert_allclose(np.asarray(normalized(scaled)),
                             np.asarray(expected), rtol=1e-4, atol=1e-4)
  # Without pretrained weights the backbone is keras's weights=None model.
  plain = pretrained.pretrained((SIDE, SIDE, 3), 3, backbone='EfficientNetB0')
  assert 'scale' not in [l.name for l in plain.layers]


def test_loads_the_file_and_declares_it_pretrained(weights, tmp_path):
  path, values = weights
  model = _build(path)
  assert _equal(model.get_layer('backbone').get_weights(), values)
  assert models.pretrained_layers(model) == (
      ('backbone',), (f'{BACKBONE}:sha256:{_sha256(path)}',))
  # keras's cached *_notop.h5 files are in the legacy HDF5 layout.
  source = _backbone()
  source.set_weights(values)
  legacy = str(tmp_path / 'mobilenet_2_5_224_tf_no_top.h5')
  with h5py.File(legacy, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, source)
  model = _build(legacy)
  assert _equal(model.get_layer('backbone').get_weights(), values)
  # Without a file: a random init, nothing declared pretrained.
  model = _build(None)
  assert models.pretrained_layers(model) == ((), ())
  assert not _equal(model.get_layer('backbone').get_weights(), values)


@pytest.mark.slow
def test_trainable_choices(weights):
  path = weights[0]
  head = _build(path, trainable='head')
  assert not head.get_layer('backbone').trainable
  assert [w.path for w in head.trainable_weights] == ['logits/kernel',
                                                      'logits/bias']
  for n in (0, 3):
    model = _build(path, trainable=n, frozen_batchnorm=False)
    weighted = [l for l in model.get_layer('backbone').layers if l.weights]
    assert [l.trainable for l in weighted] == (
        [False] * (len(weighted) - n) + [True] * n)
    expected = [w for l in weighted[len(weighted) - n:]
                for w in l.trainable_weights]
    expected += model.get_layer('logits').trainable_weights
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in expected}
  full = _build(path, trainable='all', frozen_batchnorm=False)
  assert len(full.trainable_weights) == (
      len(full.get_layer('backbone').trainable_weights) + 2)


def test_batchnorm_is_frozen_when_fine_tuning_pretrained_weights(weights):
  # Frozen, a BatchNormalization layer runs in inference mode: the model
  # computes the same in training as in inference, with the pretrained
  # statistics; every other backbone layer still trains.
  model = _build(weights[0], trainable='all')
  norms = [l for l in model.get_layer('backbone')._flatten_layers()  # pylint: disable=protected-access
           if isinstance(l, keras.layers.BatchNormalization)]
  assert norms and not any(l.trainable for l in norms)
  trainable = {id(w) for w in model.trainable_weights}
  assert not trainable & {id(w) for l in norms for w in l.weights}
  convs = [l for l in model.get_layer('backbone').layers
           if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
  assert all(id(w) in trainable for l in convs for w in l.trainable_weights)
  assert convs and all(l.trainable_weights for l in convs)
  x = np.random.default_rng(0).uniform(0, 255, (4, SIDE, SIDE, 3)).astype(
      np.float32)
  np.testing.assert_allclose(model(x, training=True), model(x, training=False),
                             rtol=1e-5, atol=1e-5)
  # A random init normalises with batch statistics (nothing to keep).
  scratch = _build(None, trainable='all')
  assert all(l.trainable for l in scratch.get_layer('backbone')._flatten_layers()  # pylint: disable=protected-access
             if isinstance(l, keras.layers.BatchNormalization))
  with pytest.raises(errors.ConfigError, match='pretrained.frozen_batchnorm'):
    _build(weights[0], frozen_batchnorm='yes')


def _bad_file(kind, tmp_path):
  if kind == 'missing':
    return str(tmp_path / 'nowhere_notop.weights.h5')
  if kind == 'not_hdf5':
    path = tmp_path / 'junk.weights.h5'
    path.write_bytes(b'not an HDF5 file')
    return str(path)
  if kind == 'include_top':
    net = _backbone(include_top=True)
  elif kind == 'other_alpha':
    net = _backbone(alpha=0.5)
  else:  # another backbone
    net = _backbone('MobileNetV2', alpha=0.35)
  return _save(net, tmp_path / f'{kind}.weights.h5')


@pytest.mark.parametrize('kind', ['missing', 'not_hdf5', 'include_top',
                                  'other_alpha', 'other_backbone'])
def test_a_weights_file_that_does_not_fit_is_a_config_error(kind, tmp_path):
  path = _bad_file(kind, tmp_path)
  with pytest.raises(errors.ConfigError) as info:
    _build(path)
  message = str(info.value).splitlines()[0]
  assert f'pretrained.weights_path = {path!r}' in message
  assert BACKBONE in message
  assert "weights='imagenet'" in message and 'save_weights(' in message


@pytest.mark.parametrize('bindings, name', [
    ({'backbone': 'ResNet49'}, 'pretrained.backbone'),
    ({'trainable': 'some'}, 'pretrained.trainable'),
    ({'trainable': -1}, 'pretrained.trainable'),
    ({'trainable': True}, 'pretrained.trainable'),
    ({'trainable': 10_000}, 'pretrained.trainable'),
    ({'dropout': 1.0}, 'pretrained.dropout'),
    ({'weight_decay': -1e-4}, 'pretrained.weight_decay'),
    ({'image_size': 16}, 'pretrained.image_size'),
    ({'image_size': 32.0}, 'pretrained.image_size'),
    ({'input_shape': (8, 8, 1)}, 'pretrained.image_size'),
    ({'input_shape': (None, None, 3)}, 'pretrained.image_size'),
    ({'backbone_kwargs': {'weights': 'imagenet'}},
     'pretrained.backbone_kwargs'),
    ({'backbone_kwargs': {'alpha': 0.25, 'depth': 3}},
     'pretrained.backbone_kwargs'),
    ({'backbone_kwargs': [('alpha', 0.25)]}, 'pretrained.backbone_kwargs'),
])
def test_bad_bindings_name_the_binding(bindings, name):
  bindings = dict(bindings)
  with pytest.raises(errors.ConfigError, match=name):
    _build(None, **bindings)


# ------------------------------------------------------ with a TrialTrainer


@pytest.fixture(scope='module')
def rgb_data():
  """A small random RGB dataset, 3 classes, on the 0..255 scale."""
  rng = np.random.default_rng(0)

  def split(n):
    return pipelines.Split(
        images=rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8),
        labels=rng.integers(0, 3, n).astype(np.int64),
        ids=np.array([str(i) for i in range(n)]))

  return pipelines.Dataset(name='random_rgb', version='0', num_classes=3,
                           train=split(96), test=split(32))


def _trainer(dataset, path, models_per_step=1, strategy='one_device',
             **kwargs):
  return trainer_lib.TrialTrainer(
      dataset, strategy_lib.get_strategy(strategy),
      model_fn=functools.partial(pretrained.pretrained, backbone=BACKBONE,
                                 weights_path=path, backbone_kwargs=KWARGS,
                                 **kwargs),
      epochs=1, batch_size=32, eval_batch_size=128,
      models_per_step=models_per_step,
      preprocessing=pipelines.Preprocessing(standardize=False, augment='none'))


def _mask(n, seed):
  return np.random.default_rng(seed).random(n) < 0.5


def _values(layer_or_model):
  return [np.array(w.numpy()) for w in layer_or_model.weights]


@pytest.mark.slow
def test_every_trial_starts_from_the_file(rgb_data, weights):
  path, values = weights
  trainer = _trainer(rgb_data, path, models_per_step=2)
  assert trainer.pretrained_digests == [f'{BACKBONE}:sha256:{_sha256(path)}']
  masks = [_mask(96, 0), _mask(96, 1)]
  masks[1][:] = masks[0]  # the same number of steps
  trainer.train_trials(masks, [11, 12])
  for model in trainer.models:  # fine-tuned: the backbones moved
    assert not _equal(_values(model.get_layer('backbone')), values)
  trainer.reinitialize([5, 6])
  heads = []
  for model in trainer.models:
    assert _equal(_values(model.get_layer('backbone')), values)
    heads.append(_values(model.get_layer('logits')))
  assert not np.array_equal(heads[0][0], heads[1][0])  # the seeds differ
  trainer.reinitialize([6, 5])  # a head is a function of its seed alone
  assert _equal(_values(trainer.models[0].get_layer('logits')), heads[1])
  assert _equal(_values(trainer.models[1].get_layer('backbone')), values)


@pytest.mark.slow
def test_head_only_training_leaves_the_backbone(rgb_data, weights):
  path, values = weights
  # Two replicas (conftest's two CPU devices): mirrored weights load too.
  trainer = _trainer(rgb_data, path, strategy='mirrored', trainable='head')
  assert trainer.strategy.num_replicas_in_sync == 2
  trainer.reinitialize(3)
  head = _values(trainer.model.get_layer('logits'))
  result = trainer.train_trial(_mask(96, 0), 3)
  assert np.isfinite(result.metrics['final_loss'])
  assert _equal(_values(trainer.model.get_layer('backbone')), values)
  after = _values(trainer.model.get_layer('logits'))
  assert all(not np.array_equal(a, b) for a, b in zip(after, head))


@pytest.mark.slow
def test_trainable_n_trains_only_the_last_n_layers(rgb_data, weights):
  path, values = weights
  n = 3
  trainer = _trainer(rgb_data, path, trainable=n, frozen_batchnorm=False)
  backbone = trainer.model.get_layer('backbone')
  initial = dict(zip((id(w) for w in backbone.weights), values))
  trainer.train_trial(_mask(96, 0), 3)
  weighted = [l for l in backbone.layers if l.weights]
  for layer in weighted[:-n]:
    assert _equal(_values(layer), [initial[id(w)] for w in layer.weights])
  for layer in weighted[-n:]:
    # Some weight moved (the fake pretrained backbone saturates, so a
    # BatchNorm's gamma can get no gradient).
    assert not _equal(_values(layer), [initial[id(w)] for w in layer.weights])


# ------------------------------------------------------- the train binary


@pytest.mark.slow
def test_finetune_config_builds_its_model_from_a_weights_file(tmp_path):
  net = keras.applications.MobileNetV2(include_top=False, weights=None,
                                       input_shape=(96, 96, 3))
  path = _save(net, tmp_path / 'mobilenetv2_notop.weights.h5')
  config.parse_gin([os.path.join(GIN_DIR, 'finetune.gin')],
                   [f'pretrained.weights_path = {path!r}'])
  assert not pipelines.Preprocessing().standardize
  model_fn = gin.query_parameter('TrialTrainer.model_fn').scoped_configurable_fn
  model = model_fn(input_shape=(32, 32, 3), num_classes=10)
  assert model.get_layer('resize').output.shape == (None, 96, 96, 3)
  assert models.pretrained_layers(model)[1] == (
      f'MobileNetV2:sha256:{_sha256(path)}',)
  assert _equal(model.get_layer('backbone').get_weights(), net.get_weights())
  assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)


def _bindings(path, backbone=BACKBONE):
  return ['TrialTrainer.model_fn = @pretrained',
          f'pretrained.backbone = {backbone!r}',
          f'pretrained.backbone_kwargs = {KWARGS!r}',
          f'pretrained.weights_path = {path!r}',
          f'pretrained.image_size = {SIDE}',
          'Preprocessing.standardize = False',
          'TrialTrainer.epochs = 1',
          "get_strategy.kind = 'one_device'"]


def _train(workdir, path, data_dir, trials=None, bindings=()):
  try:
    return train.run(workdir, [TINY], _bindings(path) + list(bindings),
                     trials=trials, data_dir=data_dir, log=lambda _: None)
  finally:
    gin.clear_config()


def test_train_binary_refuses_a_bad_weights_file(tmp_path, digits_data_dir):
  path = _bad_file('other_backbone', tmp_path)
  workdir = str(tmp_path / 'w')
  status, out, err = run_in_process(
      lambda: _train(workdir, path, digits_data_dir))
  assert status == 2, err[-3000:]
  assert 'Traceback' not in err
  lines = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, err[-3000:]
  assert 'error:' not in out
  assert f'pretrained.weights_path = {path!r}' in lines[0]
  assert f'pretrained.backbone = {BACKBONE!r}' in lines[0]
  assert not os.path.exists(workdir)  # bad input leaves no workdir


@pytest.mark.slow
def test_fine_tune_and_estimate(tmp_path, digits_data_dir, weights,
                                other_weights):
  path = weights[0]
  workdir = str(tmp_path / 'w')
  # The fake weights were trained on nothing: in one epoch only a head on
  # their fixed features learns (test accuracy ~0.17, above chance), where
  # fine-tuning them all predicts about one class.
  head = ["pretrained.trainable = 'head'"]
  summary = _train(workdir, path, digits_data_dir, bindings=head)
  assert summary.trained == [0, 1, 2, 3]
  found = records.list_records(workdir)
  assert len(found) == 4
  for record in found.values():
    assert records.read_metadata(record)['fingerprint'] == summary.fingerprint
  written = pipeline.run(workdir, gin_bindings=['Estimator.report = False'],
                         log=lambda _: None)
  assert written
  # The same content elsewhere is the same config: nothing to train.
  moved = str(tmp_path / 'elsewhere' / 'copy.weights.h5')
  os.makedirs(os.path.dirname(moved))
  shutil.copyfile(path, moved)
  again = _train(workdir, moved, digits_data_dir, bindings=head)
  assert again.trained == [] and again.skipped == [0, 1, 2, 3]
  assert again.fingerprint == summary.fingerprint
  # Other weights are another config, whatever their path.
  with pytest.raises(errors.UserError, match='another config'):
    _train(workdir, other_weights, digits_data_dir, bindings=head)
  other = _train(str(tmp_path / 'other'), other_weights, digits_data_dir,
                 trials='0:1', bindings=head)
  assert other.fingerprint != summary.fingerprint


@pytest.mark.slow
@pytest.mark.parametrize('backbone,kwargs', [
    ('MobileNetV2', {'alpha': 0.35}), ('EfficientNetB0', {})])
def test_backbones_from_scratch_reinitialise_from_the_trial_seed(
    backbone, kwargs):
  # Depthwise kernels (their initializer is `depthwise_initializer`) and
  # Normalization statistics (no initializer: kept at their built values)
  # are re-initialised like every other weight.
  rng = np.random.default_rng(0)

  def split(n):
    return pipelines.Split(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                           rng.integers(0, 3, n), np.arange(n).astype(str))

  dataset = pipelines.Dataset('toy', '0', 3, split(32), split(8))
  trainer = trainer_lib.TrialTrainer(
      dataset, strategy_lib.get_strategy('one_device'), epochs=1,
      batch_size=16, model_fn=functools.partial(
          pretrained.pretrained, backbone=backbone, image_size=32,
          backbone_kwargs=kwargs))
  values = []
  for seed in (1, 2, 1):
    trainer.reinitialize(seed)
    values.append([w.numpy().copy() for w in trainer.model.weights])
  assert all(np.array_equal(a, b) for a, b in zip(values[0], values[2]))
  kernels = {id(layer.kernel) for layer in trainer.model._flatten_layers()  # pylint: disable=protected-access
             if isinstance(layer, keras.layers.DepthwiseConv2D)}
  depthwise = [i for i, w in enumerate(trainer.model.weights)
               if id(w) in kernels]
  assert depthwise
  assert all(not np.array_equal(values[0][i], values[1][i])
             for i in depthwise)
