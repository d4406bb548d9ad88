"""Which weights a trial starts from what: re-initialised from the trial's
seed, restored to pretrained values, or frozen at a base model's.

training.TrialTrainer builds its model once per process and calls these for
every trial:

  * reinit_plan: (variable, initializer) for every weight, in a fixed order;
    a weight with no initializer to draw again (a Normalization layer's
    statistics, a constant layer-scale) restarts at its built value
    (BuiltValue), and any other is refused;
  * assign_fresh: the plan's values drawn from one seed;
  * pretrained_values: the built (loaded) values of pretrained layers
    (models.mark_pretrained, TrialTrainer.pretrained_layers), restored
    after every re-initialisation;
  * freeze_all_but: the ablations' frozen layers and their weights.

Layers are given by name or by index among model.layers
(models.layer_indices): an index holds for every build of a model
function, a name of an unnamed layer (dense_1) only for one build.
"""

import keras
import numpy as np

from tf_memorization.training import models as models_lib


# Layer attributes that hold weights, each re-initialised by the layer's
# `<name>_initializer` (or the other initializers named here: a depthwise
# convolution's `kernel` has a `depthwise_initializer`).
WEIGHT_ATTRIBUTES = ('kernel', 'bias', 'gamma', 'beta', 'moving_mean',
                     'moving_variance', 'embeddings', 'depthwise_kernel',
                     'pointwise_kernel')
INITIALIZERS = {'kernel': ('kernel_initializer', 'depthwise_initializer'),
                'depthwise_kernel': ('depthwise_initializer',),
                'pointwise_kernel': ('pointwise_initializer',)}


class BuiltValue:
  """The value a weight was built with, in place of an initializer in a
  plan (assign_fresh assigns it as it is: no seed)."""

  def __init__(self, value):
    self.value = value


def derived_seed(seed, *keys):
  return int(np.random.default_rng([seed, *keys]).integers(0, 2**31 - 1))


def freeze_all_but(model, trainable_layers):
  """Marks every layer not in `trainable_layers` frozen; their weights.

  `trainable_layers`: the layers' names or indices among model.layers
  (models.layer_indices; indices hold for every build of the model).
  """
  if trainable_layers is None:
    return []
  keep = set(models_lib.layer_indices(model, trainable_layers,
                                      'TrialTrainer.trainable_layers'))
  frozen, seen = [], set()
  for index, layer in enumerate(model.layers):
    # A listed layer keeps the trainable state it was built with: the
    # parts of a backbone its builder froze stay frozen (and keep the
    # base weights too).
    if index not in keep:
      layer.trainable = False
      parts = [layer]
    else:
      parts = [sub for sub in layer._flatten_layers(include_self=False)  # pylint: disable=protected-access
               if not sub.trainable]
    for part in parts:
      for variable in part.weights:
        if id(variable) not in seen:
          seen.add(id(variable))
          frozen.append(variable)
  return frozen


def pretrained_values(model, layers):
  """(variable, value now) of the pretrained layers' weights: `layers`
  (names or indices among model.layers) and those the model's builder
  declared (models.mark_pretrained: names of this build's layers)."""
  declared = models_lib.pretrained_layers(model)[0]
  keep = set(models_lib.layer_indices(model, layers,
                                      'TrialTrainer.pretrained_layers'))
  keep |= set(models_lib.layer_indices(model, declared, 'mark_pretrained'))
  return [(v, v.numpy()) for index, layer in enumerate(model.layers)
          if index in keep for v in layer.weights]


def reinit_plan(model, pretrained=frozenset()):
  """(variable, initializer) for every weight of the model not in
  `pretrained` (variable ids), in a fixed order.

  A weight whose layer has no initializer for it is re-set to the value
  it was built with when that cannot depend on a seed: a non-trainable
  statistic (a Normalization layer's mean and variance) or a constant
  (e.g. a layer-scale initialised to 1e-6); any other is an error.
  """
  plan, covered = [], set(pretrained)
  for layer in model._flatten_layers():  # pylint: disable=protected-access
    for name in WEIGHT_ATTRIBUTES:
      variable = getattr(layer, name, None)
      initializer = next(
          (getattr(layer, attribute) for attribute in
           INITIALIZERS.get(name, (f'{name}_initializer',))
           if getattr(layer, attribute, None) is not None), None)
      if (isinstance(variable, keras.Variable) and initializer is not None
          and id(variable) not in covered):
        plan.append((variable, initializer))
        covered.add(id(variable))
  missing = []
  for w in model.weights:
    if id(w) in covered:
      continue
    value = w.numpy()
    if not w.trainable or (value.size and np.all(value == value.flat[0])):
      plan.append((w, BuiltValue(value)))
    else:
      missing.append(w.path)
  if missing:
    raise ValueError(
        f'Cannot re-initialise weights {missing[:5]} of model '
        f'{model.name}: their layer has no matching `*_initializer`. '
        'Use layers from keras.layers, declare them pretrained '
        '(TrialTrainer.pretrained_layers, models.mark_pretrained), or add '
        'the attribute to initializing.WEIGHT_ATTRIBUTES.')
  return plan


def assign_fresh(plan, seed):
  """Assigns every (variable, initializer) of `plan` a fresh value drawn
  from `seed`: initializer j of the plan draws with derived_seed(seed, j)."""
  for j, (variable, initializer) in enumerate(plan):
    if isinstance(initializer, BuiltValue):
      variable.assign(initializer.value)
      continue
    config = initializer.get_config()
    if 'seed' in config:  # unseeded Keras initializers repeat their values
      config['seed'] = derived_seed(seed, j)
    fresh = type(initializer).from_config(config)
    variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
