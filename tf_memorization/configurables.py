"""Every gin configurable of the package, registered by importing this module.

The binaries import it before parsing a config, so that a binding to any
configurable parses strictly (a typo is an error, not ignored):

    load_dataset, label_noise               data/pipelines.py
    image_folder                            data/folders.py
    arrays                                  data/arrays.py
    SubsetDesign                            stats/masks.py
    small_resnet, resnet18, mlp, ...        training/models.py
    pretrained                              training/pretrained.py
    get_strategy                            training/strategy.py
    TrialTrainer                            training/trainer.py
    Estimator                               estimation/settings.py
    PerExampleScores                        estimation/per_example.py
    AblationExperiment, RemovalExperiment,
    LeaveOneOutExperiment, SubsetRatioSweep experiments/
"""

# pylint: disable=unused-import
from tf_memorization.data import arrays
from tf_memorization.data import folders
from tf_memorization.data import pipelines
from tf_memorization.estimation import per_example
from tf_memorization.estimation import settings
from tf_memorization import experiments
from tf_memorization.stats import masks
from tf_memorization.training import models
from tf_memorization.training import pretrained
from tf_memorization.training import strategy
from tf_memorization.training import trainer
