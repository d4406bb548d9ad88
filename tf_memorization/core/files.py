"""The names of a workdir's files and folders (W is the train binary's
--workdir; docs/architecture.md draws the whole tree).

    W/operative_config.gin   the run's config, read back as data only
    W/run.json               the run's fingerprint and description
    W/dataset.npz            labels and ids of every example
    W/trials/                one record per trial (workdir/records.py)
    W/experiments/<name>/    models the experiments retrained, with their
                             own trials/ and plan.json
    W/plan/                  an imported workdir's mask digest of each trial
                             (importing/writer.py)
    W/claims/                leases of trials in a shared workdir
    W/estimates/             the estimate's outputs (workdir/estimates.py)
    W/report/                the HTML report
"""

CONFIG_FILE = 'operative_config.gin'
RUN_FILE = 'run.json'
DATASET_FILE = 'dataset.npz'
TRIALS_DIR = 'trials'
EXPERIMENTS_DIR = 'experiments'
PLAN_FILE = 'plan.json'
PLAN_DIR = 'plan'  # an imported workdir's: one mask digest per trial
CLAIMS_DIR = 'claims'
ESTIMATES_DIR = 'estimates'
REPORT_DIR = 'report'
