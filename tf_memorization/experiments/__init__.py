"""Experiments that retrain models: ablation, removal, leave-one-out, ratio
sweep (see experiments/base.py for the interface they share).

    BY_KIND   {kind: experiment class}: the names Estimator.experiments
              takes, in the order they were registered (base.register adds
              any experiment defined elsewhere)
"""

from tf_memorization.experiments import ablation
from tf_memorization.experiments import base
from tf_memorization.experiments import leave_one_out
from tf_memorization.experiments import ratio_sweep
from tf_memorization.experiments import removal

Inputs = base.Inputs
Experiment = base.Experiment
BY_KIND = base.REGISTRY

AblationExperiment = ablation.AblationExperiment
RemovalExperiment = removal.RemovalExperiment
LeaveOneOutExperiment = leave_one_out.LeaveOneOutExperiment
SubsetRatioSweep = ratio_sweep.SubsetRatioSweep
