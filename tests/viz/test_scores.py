from __future__ import annotations

import json

import numpy as np
import pytest

from speakerprint.errors import ManifestError
from speakerprint.eval.metrics import compute_eer
from speakerprint.viz.scores import det_points, plot_det, plot_score_histograms, read_scores


def _trials(rng, n=200):
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    scores = np.r_[rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.15, n)]
    return scores, labels


def test_read_scores_from_a_score_file_and_from_an_eval_record(tmp_path):
    four = tmp_path / "four.txt"
    four.write_text("1 a b 0.9\n\n0 a c -0.2\n1 d e 0.1\n0 f g 0.3\n")
    scores, labels = read_scores(four)
    np.testing.assert_array_equal(scores, [0.9, -0.2, 0.1, 0.3])
    np.testing.assert_array_equal(labels, [1, 0, 1, 0])
    record = tmp_path / "eval.json"
    record.write_text(json.dumps({"eer": 0.05, "scores_file": "four.txt"}))  # relative to it
    np.testing.assert_array_equal(read_scores(record)[0], scores)


def test_read_scores_lists_every_bad_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a b 0.9\n2 a c 0.5\n0 a d x\n1 2 3\n")
    with pytest.raises(ManifestError) as err:
        read_scores(bad)
    message = str(err.value)
    assert f"{bad}:2" in message and f"{bad}:3" in message and f"{bad}:4" in message


def test_read_scores_needs_both_classes(tmp_path):
    one_class = tmp_path / "s.txt"
    one_class.write_text("1 a b 0.9\n1 a c 0.5\n")
    with pytest.raises(ManifestError, match="non-target"):
        read_scores(one_class)


def test_an_eval_record_without_scores_is_refused(tmp_path):
    metrics_only = tmp_path / "eval.json"
    metrics_only.write_text(json.dumps({"eer": 0.05, "min_dcf": 0.4}))
    with pytest.raises(ManifestError, match="no scores file"):
        read_scores(metrics_only)


def test_histograms_on_given_axes_with_threshold():
    from speakerprint.viz._common import new_figure

    scores, labels = _trials(np.random.default_rng(0))
    ax = new_figure(4, 3).add_subplot()
    assert plot_score_histograms(scores, labels, ax=ax, threshold=0.35) is ax
    assert len(ax.patches) > 0
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.35]
    heights = [p.get_height() for p in ax.patches]
    widths = [p.get_width() for p in ax.patches]
    # Two density histograms on shared bins: each integrates to 1.
    assert np.isclose(np.dot(heights, widths), 2.0)


def test_det_points_cross_the_diagonal_at_the_eer():
    from scipy.stats import norm

    scores, labels = _trials(np.random.default_rng(1))
    x, y = det_points(scores, labels)
    assert np.all(np.diff(x) <= 0) and np.all(np.diff(y) >= 0)
    crossing = np.argmin(np.abs(x - y))
    eer = compute_eer(scores, labels).eer
    assert abs(norm.cdf(x[crossing]) - eer) < 0.02


def test_plot_det_one_line_and_eer_marker_per_system():
    rng = np.random.default_rng(2)
    ax = plot_det({"a": _trials(rng), "b": _trials(rng)})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 2 and labels[0].startswith("a (EER ")
    with pytest.raises(ValueError):
        plot_det({})
