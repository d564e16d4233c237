"""Classification metrics via scikit-learn: accuracy, balanced accuracy, macro and per-class P/R/F1,
the minority class's P/R/F1 and the confusion matrix. Base names (``study.names.BASE_METRICS``): the
caller adds the split prefix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str], minority: int
) -> dict[str, float | list]:
    """Flat dict of metrics; per-class keys are ``precision_<class>`` etc.; ``confusion`` is rows=true.

    ``minority``: the label of the class with the fewest training images (before resampling)."""
    # imported here: scikit-learn takes seconds to import, and every process that imports the loop pays it
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    if not 0 <= minority < len(classes):
        raise ValueError(f"minority must be a label in [0, {len(classes) - 1}], got {minority}")
    labels = list(range(len(classes)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, float | list] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "minority_precision": float(p[minority]),
        "minority_recall": float(r[minority]),
        "minority_f1": float(f[minority]),
    }
    for i, name in enumerate(classes):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = float(p[i]), float(r[i]), float(f[i])
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out
