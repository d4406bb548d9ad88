"""The estimate: scores, what to trust, analyses, experiments, the report.

    settings     the `Estimator` configurable (which scores, how; the
                 planner's targets), importable without the pipeline
    pipeline     the whole estimate of a workdir (`run`)
    per_example  LiRA, proxies and held-out class probabilities beside the
                 estimates
    analyses     label noise, memorization against influence, convergence
"""
