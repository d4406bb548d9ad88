"""The two contracts of a workdir W, read as untrusted input.

    records          one trial's record (.npz): format, writing, reading;
                     W/dataset.npz, W/run.json, plan.json
    record_checks    every field of a record checked against the dataset
                     and its design
    loading          a folder of records loaded and checked (`load`)
    estimates        the files of W/estimates: names, writers, `Estimates`
    estimate_inputs  W/estimates read back as untrusted input (the report,
                     compare)
"""
