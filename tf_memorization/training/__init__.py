"""Training the trials: models, the trainer, runs of many trials.

    models        ResNets, the MLP, layers by position
    pretrained    keras.applications backbones from local weights
    initializing  what each trial's weights start from
    strategy      tf.distribute strategies
    schedules     learning-rate schedules
    dynamics      learning-dynamics accumulators
    inference     the inference model and `TrialResult`
    trainer       the trial trainer (`TrialTrainer`)
    leases        claims of trials in shared workdirs
    runs          a run's setup from the parsed config, trials into W
    sequential    rounds of trials until the planner's target
"""
