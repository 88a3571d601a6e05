from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interpflow.scoring.metrics import METRIC_COLUMNS, binary_metrics, latent_metrics


def test_binary_metrics_hand_case():
    truth, pred = np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)
    # positive/negative pairs: (.9,.6) win, (.9,.1) win, (.4,.6) loss, (.4,.1) win -> 3/4
    m = binary_metrics(truth, pred, np.array([0.9, 0.4, 0.6, 0.1]))
    assert m["n"] == 4
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(0.75)


def test_auroc_with_ties():
    # pairs: (.8,.3) 1, (.8,.9) 0, (.3,.3) tie 0.5, (.3,.9) 0 -> 1.5 / 4
    truth, pred = np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 1], bool)
    m = binary_metrics(truth, pred, np.array([0.8, 0.3, 0.3, 0.9]))
    assert m["auroc"] == pytest.approx(0.375)
    assert m["balanced_accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("truth", "p_yes"),
    [
        ([1, 1, 0, 0], None),
        ([1, 1, 0, 0], [0.9, np.nan, 0.2, 0.1]),  # one judgment without logprobs: no AUROC at all
        ([1, 1, 1, 1], [0.9, 0.8, 0.2, 0.1]),  # one class only
    ],
)
def test_auroc_nan_when_undefined(truth, p_yes):
    p = None if p_yes is None else np.array(p_yes)
    m = binary_metrics(np.array(truth, bool), np.array([1, 0, 0, 0], bool), p)
    assert np.isnan(m["auroc"])
    assert not np.isnan(m["balanced_accuracy"])


def test_zero_division_and_empty():
    m = binary_metrics(np.array([1, 0], bool), np.array([0, 0], bool))
    assert (m["precision"], m["recall"], m["f1"], m["balanced_accuracy"]) == (0.0, 0.0, 0.0, 0.5)
    empty = binary_metrics(np.array([], bool), np.array([], bool), np.array([]))
    assert empty["n"] == 0 and all(np.isnan(empty[k]) for k in ("balanced_accuracy", "f1", "auroc"))
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.array([1, 0], bool), np.array([1], bool))


def _pred(latent, activating, prediction, status, p_yes=np.nan):
    return dict(latent=latent, activating=activating, prediction=prediction, p_yes=p_yes, status=status)


def test_latent_metrics_counts_failures_and_sums_usage():
    rows = [
        _pred(3, True, True, "ok", 0.9),
        _pred(3, True, False, "ok", 0.4),
        _pred(3, False, False, "ok", 0.6),
        _pred(3, False, False, "ok", 0.1),
        _pred(3, True, None, "parse_error"),  # failed rows count in n_failed, not in the metrics
        _pred(7, True, None, "llm_error"),
        _pred(7, False, None, "llm_error"),
    ]
    pred = pd.DataFrame(rows).astype({"prediction": "boolean"})
    usage = pd.DataFrame(
        {
            "latent": [3, 3, 7],
            "prompt_tokens": [100, 50, 80],
            "completion_tokens": [10, 5, 0],
            "cost_usd": [0.01, 0.02, np.nan],
        }
    )
    out = latent_metrics(pred, "detection", usage)
    assert list(out.columns) == list(METRIC_COLUMNS)
    assert out.dtypes.astype(str).to_dict() == METRIC_COLUMNS
    a, b = out.iloc[0], out.iloc[1]
    assert (a.latent, a.scorer, a.status, a.n, a.n_failed) == (3, "detection", "ok", 4, 1)
    assert a.balanced_accuracy == pytest.approx(0.75) and a.auroc == pytest.approx(0.75)
    assert (a.prompt_tokens, a.completion_tokens, a.cost_usd) == (150, 15, pytest.approx(0.03))
    assert (b.latent, b.status, b.n, b.n_failed) == (7, "llm_error", 0, 2)
    assert np.isnan(b.balanced_accuracy) and np.isnan(b.cost_usd)  # an unknown cost is not summed as 0
    assert (b.prompt_tokens, b.completion_tokens) == (80, 0)


def test_latent_metrics_without_usage():
    pred = pd.DataFrame([_pred(1, True, True, "ok"), _pred(1, False, False, "ok")]).astype(
        {"prediction": "boolean"}
    )
    out = latent_metrics(pred, "fuzzing")
    assert out.iloc[0].balanced_accuracy == 1.0 and np.isnan(out.iloc[0].auroc)
    assert out.iloc[0].prompt_tokens == 0 and np.isnan(out.iloc[0].cost_usd)


def test_headline_is_auroc_where_p_yes_exists():
    # a judge that says yes to everything but ranks the windows right: balanced accuracy 0.5, AUROC 1
    rows = [_pred(1, t, True, "ok", p) for t, p in ((True, 0.9), (True, 0.8), (False, 0.7), (False, 0.6))]
    out = latent_metrics(pd.DataFrame(rows).astype({"prediction": "boolean"}), "detection").iloc[0]
    assert out.balanced_accuracy == 0.5 and out.auroc == 1.0
    assert (out.score, out.score_metric) == (1.0, "auroc")
    no_p = [_pred(2, True, True, "ok"), _pred(2, False, True, "ok")]
    out = latent_metrics(pd.DataFrame(no_p).astype({"prediction": "boolean"}), "detection").iloc[0]
    assert (out.score, out.score_metric) == (0.5, "balanced_accuracy")


def test_one_class_test_is_constant_truth_not_a_score():
    """A latent active in every window (a dense neuron) gets no non-activating test window: a judge saying
    yes everywhere would score 1, so the latent is set aside as constant_truth instead of scored."""
    rows = [_pred(5, True, True, "ok", 0.9), _pred(5, True, True, "ok", 0.8), _pred(6, True, True, "ok", 0.9),
            _pred(6, False, False, "ok", 0.2)]  # fmt: skip
    pred = pd.DataFrame(rows).astype({"prediction": "boolean"})
    out = latent_metrics(pred, "detection").set_index("latent")
    assert out.loc[5, "status"] == "constant_truth" and out.loc[6, "status"] == "ok"
    assert out.loc[6, "score"] == 1.0
