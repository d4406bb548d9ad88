"""Trials trained anywhere, as records the estimator reads (and back out).

    writer.py    TrialWriter: records from any training loop's masks and logits
    logits.py    what a record keeps of logits (pred, prob, margin, log-odds)
    npy.py       rows of a .npy file read by offset (imports of any size)
    sources.py   the arrays, LiRA and datamodels layouts, checked and read
    exports.py   a workdir's trials written out in the LiRA and datamodels layouts
    run.py       the import binary's work: a source into a new workdir, whole
"""
