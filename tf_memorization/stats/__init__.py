"""The statistics: numpy (and scipy) only, no TensorFlow, no figures.

    scores          memorization, influence, standard errors, correlations
    ranks           average ranks, rank correlation and ROC AUC, shared by
                    scores, proxies and membership
    selection       tests and false-discovery-rate control
    views           influence on several views of the trials in one pass
    assessment      what to trust: controlled sets, the null, convergence
    planner         predictions for more trials
    masks           subset designs (which trial trains on which examples)
    membership      LiRA's Gaussians and scores
    membership_eval its evaluation: ROC, AUC, TPR at low FPR
    proxies         cheap proxies of memorization, held-out class
                    probabilities, label-issue scores
"""
