"""Datasets and the subset pipelines that feed a trial.

    pipelines   datasets (tfds, in memory or streaming), preprocessing,
                label noise and the subset pipelines (`load_dataset`)
    tfds_data   any tfds builder prepared offline where it can
    preparing   preparation locks and claims
    folders     your own images (`image_folder`)
    arrays      your own arrays (`arrays`)
    datasets/   the offline demo dataset (scikit-learn's digits as a tfds
                builder)
"""
