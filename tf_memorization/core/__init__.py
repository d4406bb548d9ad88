"""The floor every stage stands on: no model, no statistic, no workdir format.

    errors      the user-facing errors and the argument checks of every
                configurable
    quiet       the binaries' filter of TensorFlow's C++ log lines
    progress    the one progress / ETA line
    storage     atomic writes, full disks, bounded reads of untrusted files,
                output folders swapped in whole
    npz_reader  untrusted .npz files read member by member, bounded
    files       the names of a workdir's files and folders
    config      gin: parsing, a workdir's config read as data, fingerprints
"""
