"""DER through pyannote.metrics, held to cases worked out on paper."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from speakerprint.data.rttm import Turn, write_rttm
from speakerprint.eval.diarization import diarization_error, diarization_error_files

pytest.importorskip("pyannote.metrics")


def turns(*spans: tuple[float, float, str], file_id: str = "f") -> list[Turn]:
    return [Turn(file_id, start, end - start, speaker) for start, end, speaker in spans]


# A [0,10] B [10,20]; the hypothesis moves the change to 12 s: s0 -> A, s1 -> B, and [10,12]
# is B's speech given to A's cluster: 2 s of confusion in 20 s.
CHANGE_REF = turns((0, 10, "A"), (10, 20, "B"))
CHANGE_HYP = turns((0, 12, "s0"), (12, 20, "s1"))

# A [0,10] B [5,15], overlapping on [5,10]; the hypothesis has only A's turn and a false alarm
# at [16,18].
OVERLAP_REF = turns((0, 10, "A"), (5, 15, "B"))
OVERLAP_HYP = turns((0, 10, "s0"), (16, 18, "s1"))


def approx(score, total, missed, false_alarm, confusion):
    assert score.total_s == pytest.approx(total, abs=1e-6)
    assert score.missed_s == pytest.approx(missed, abs=1e-6)
    assert score.false_alarm_s == pytest.approx(false_alarm, abs=1e-6)
    assert score.confusion_s == pytest.approx(confusion, abs=1e-6)
    assert score.der == pytest.approx((missed + false_alarm + confusion) / total, abs=1e-9)


def test_confusion_without_collar():
    score = diarization_error(CHANGE_REF, CHANGE_HYP, collar_s=0.0)
    approx(score, total=20, missed=0, false_alarm=0, confusion=2)
    assert score.confusion == pytest.approx(0.1)


def test_collar_is_nist_seconds_on_each_side_of_every_boundary():
    # Boundaries at 0, 10, 20; 0.25 s each side removed: scored [0.25,9.75] and [10.25,19.75]
    # = 19 s, of which [10.25,12] is confused. pyannote's collar=0.25 (total width) would give
    # 19.5 s and 1.875 s instead.
    score = diarization_error(CHANGE_REF, CHANGE_HYP, collar_s=0.25)
    approx(score, total=19, missed=0, false_alarm=0, confusion=1.75)


def test_overlap_scored_counts_each_speaker():
    # [5,10]: two reference speakers, one hypothesis speaker: 5 s missed; [10,15] B alone and
    # no hypothesis: 5 s missed; [16,18] 2 s false alarm. Reference speech 10 + 10 = 20 s.
    score = diarization_error(OVERLAP_REF, OVERLAP_HYP, collar_s=0.0)
    approx(score, total=20, missed=10, false_alarm=2, confusion=0)


def test_overlap_not_scored():
    # [5,10] leaves scoring: A [0,5] correct, B [10,15] missed, [16,18] false alarm.
    score = diarization_error(OVERLAP_REF, OVERLAP_HYP, collar_s=0.0, skip_overlap=True)
    approx(score, total=10, missed=5, false_alarm=2, confusion=0)


def test_overlap_scored_with_collar():
    # Boundaries 0, 5, 10, 15 lose 0.25 s each side: [0.25,4.75] A correct (4.5 s);
    # [5.25,9.75] A+B against s0 (9 s of speech, 4.5 missed); [10.25,14.75] B missed (4.5 s);
    # [16,18] false alarm, untouched (no reference boundary near).
    score = diarization_error(OVERLAP_REF, OVERLAP_HYP, collar_s=0.25)
    approx(score, total=18, missed=9, false_alarm=2, confusion=0)


def test_uem_limits_scoring():
    score = diarization_error(CHANGE_REF, CHANGE_HYP, collar_s=0.0, uem=[(0.0, 11.0)])
    approx(score, total=11, missed=0, false_alarm=0, confusion=1)


def test_perfect_hypothesis_with_other_labels_scores_zero():
    hyp = turns((0, 10, "x"), (10, 20, "y"))
    assert diarization_error(CHANGE_REF, hyp).der == 0.0


def test_files_sum_seconds_not_rates():
    # f1: 2 s wrong of 20; g: 10 s of speech missing from the hypothesis. NIST: 12/30 = 0.4
    # (the mean of rates would be 0.55).
    ref = {"f1": CHANGE_REF, "g": turns((0, 10, "A"), file_id="g")}
    hyp = {"f1": CHANGE_HYP, "extra": turns((0, 1, "z"), file_id="extra")}
    report = diarization_error_files(ref, hyp, collar_s=0.0)
    assert report.total.der == pytest.approx(0.4)
    assert report.per_file["g"].missed == pytest.approx(1.0)
    assert report.missing_in_hypothesis == ["g"]
    assert report.missing_in_reference == ["extra"]
    assert set(report.per_file) == {"f1", "g"}


def test_negative_collar_is_refused():
    with pytest.raises(ValueError, match="collar_s"):
        diarization_error(CHANGE_REF, CHANGE_HYP, collar_s=-1)


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyannote.metrics.diarization", None)
    with pytest.raises(ImportError, match=r"speakerprint\[diarize\]"):
        diarization_error(CHANGE_REF, CHANGE_HYP)


def _rttms(tmp_path):
    ref, hyp = tmp_path / "ref.rttm", tmp_path / "hyp.rttm"
    write_rttm(ref, CHANGE_REF + turns((0, 10, "A"), file_id="g"))
    write_rttm(hyp, CHANGE_HYP + turns((0, 1, "z"), file_id="extra"))
    return ref, hyp


def test_cli_prints_both_collars_per_file_and_total(tmp_path):
    from speakerprint.cli.main import app

    ref, hyp = _rttms(tmp_path)
    result = CliRunner().invoke(app, ["eval-diarization", str(ref), str(hyp)])
    assert result.exit_code == 0, result.output
    assert "collar 0.25 s" in result.output and "collar 0 s" in result.output
    assert "only, scored as missed speech: g" in result.output
    assert "only, not scored: extra" in result.output
    total_lines = [line for line in result.output.splitlines() if "TOTAL" in line]
    # collar 0: (2 + 10) / 30 = 40%
    assert "40.00%" in total_lines[1]


def test_cli_json_with_one_collar(tmp_path):
    from speakerprint.cli.main import app

    ref, hyp = _rttms(tmp_path)
    args = ["eval-diarization", str(ref), str(hyp), "--collar", "0", "--skip-overlap", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out["scores"]) == 1 and out["scores"][0]["skip_overlap"] is True
    assert out["scores"][0]["total"]["der"] == pytest.approx(0.4)
    assert out["scores"][0]["per_file"]["f"]["confusion_s"] == pytest.approx(2.0)


def test_cli_reference_without_turns_is_one_line_error(tmp_path):
    from speakerprint.cli.main import app

    ref, hyp = tmp_path / "empty.rttm", _rttms(tmp_path)[1]
    ref.write_text("")
    result = CliRunner().invoke(app, ["eval-diarization", str(ref), str(hyp)])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "no SPEAKER turns" in result.output


def test_overlapping_turns_of_one_speaker_count_once():
    # The hypothesis says "s0" twice over [5,10]: still one speaker there, so with the
    # reference's two speakers, 5 s are missed (not confused).
    hyp = turns((0, 10, "s0"), (5, 15, "s0"))
    score = diarization_error(OVERLAP_REF, hyp, collar_s=0.0)
    approx(score, total=20, missed=5, false_alarm=0, confusion=5)


def _frame_der(reference: list[Turn], hypothesis: list[Turn]) -> float:
    """DER counted on 1 ms frames with the best one-to-one label map (Hungarian): an
    implementation independent of pyannote's, for times on whole milliseconds, no collar."""
    from scipy.optimize import linear_sum_assignment

    def activity(ts):
        labels = sorted({t.speaker for t in ts})
        act = np.zeros((len(labels), 100_000), bool)
        for t in ts:
            act[labels.index(t.speaker), round(t.start_s * 1000) : round(t.end_s * 1000)] = True
        return act.astype(np.int64)

    ref, hyp = activity(reference), activity(hypothesis)
    n_ref, n_hyp = ref.sum(0), hyp.sum(0)
    rows, cols = linear_sum_assignment(-(ref @ hyp.T))
    correct = (ref @ hyp.T)[rows, cols].sum()
    errors = np.maximum(n_ref, n_hyp).sum() - correct
    return errors / n_ref.sum()


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_a_frame_count_on_random_turns(seed):
    rng = np.random.default_rng(seed)

    def random_turns(names):
        starts = rng.integers(0, 60_000, 12)
        return [
            Turn("f", s / 1000, int(rng.integers(200, 8_000)) / 1000, str(rng.choice(names)))
            for s in starts
        ]

    reference, hypothesis = random_turns(["A", "B", "C"]), random_turns(["s0", "s1", "s2", "s3"])
    score = diarization_error(reference, hypothesis, collar_s=0.0)
    assert score.der == pytest.approx(_frame_der(reference, hypothesis), abs=1e-6)
