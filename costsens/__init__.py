"""Cost-sensitive learning on small tabular data: the third seed's experiment, apart from the image study.

    python -m costsens.report   # the paper's decision-tree experiment, offline -> results/cost_sensitive.md
    python -m costsens.tune     # the same as a Ray Tune study, one trial per cost matrix, logged to MLflow

Arrows point one way: this package builds on ``study.costs`` (the cost-matrix arithmetic the
image study shares); nothing in ``study`` imports it.
"""
