"""Every gin configurable of the package, registered by importing this module.

The binaries import it before parsing a config, so that a binding to any
configurable parses strictly (a typo is an error, not ignored):

    load_dataset, label_noise               data.py
    image_folder                            folders.py
    arrays                                  arrays.py
    pretrained                              pretrained.py
    SubsetDesign                            masks.py
    small_resnet, resnet18, mlp, ...        models.py
    get_strategy                            strategy.py
    TrialTrainer                            training.py
    Estimator                               estimator.py
    AblationExperiment, RemovalExperiment,
    LeaveOneOutExperiment, SubsetRatioSweep experiments/
"""

# pylint: disable=unused-import
from tf_memorization import arrays
from tf_memorization import data
from tf_memorization import estimator
from tf_memorization import experiments
from tf_memorization import folders
from tf_memorization import masks
from tf_memorization import models
from tf_memorization import pretrained
from tf_memorization import strategy
from tf_memorization import training
