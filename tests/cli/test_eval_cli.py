"""`speakerprint eval` with test conditions, a cache, score normalisation and identification,
through typer's CliRunner; and its one-line errors naming the option or file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.data.manifest import read_manifest, write_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort_manifest(demo_prepared, tmp_path_factory):
    """Two utterances of each of the 22 training speakers: a small cohort."""
    seen: dict[str, int] = {}
    utts = []
    for utt in read_manifest(demo_prepared / "train.jsonl"):
        if seen.get(utt.speaker, 0) < 2:
            utts.append(utt)
            seen[utt.speaker] = seen.get(utt.speaker, 0) + 1
    path = tmp_path_factory.mktemp("cohort") / "cohort.jsonl"
    write_manifest(path, utts)
    return path


def _eval(tiny_bundle, demo_prepared, *args):
    return runner.invoke(
        app,
        [
            "eval",
            str(tiny_bundle),
            "--manifest",
            str(demo_prepared / "dev.jsonl"),
            "--trials",
            str(demo_prepared / "dev_trials.txt"),
            *args,
        ],
    )


def test_asnorm_crop_identification_with_a_cache(
    tmp_path, tiny_bundle, demo_prepared, cohort_manifest
):
    args = [
        "--condition",
        "crop",
        "--crop-s",
        "2.0",
        "--cache",
        str(tmp_path / "cache"),
        "--norm",
        "asnorm",
        "--cohort",
        str(cohort_manifest),
        "--identification",
    ]
    result = _eval(tiny_bundle, demo_prepared, *args, "--json", "--out", str(tmp_path / "e.json"))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == json.loads((tmp_path / "e.json").read_text())
    assert record["condition"] == {"kind": "crop", "key": "crop_2.0s", "crop_s": 2.0}
    norm = record["normalization"]
    assert norm["method"] == "asnorm" and norm["cohort"] == str(cohort_manifest)
    assert norm["top_k"] == 22 and "300" in norm["note"]
    assert norm["num_cohort_speakers"] == 22 and norm["num_cohort_utterances"] == 44
    assert [d["p_target"] for d in record["min_dcf_by_p_target"]] == [0.01, 0.05]
    assert [r["mode"] for r in record["identification"]] == ["inclusive", "leave_one_out"]
    assert record["num_embedded"] == 100 + 44 and record["num_cached"] == 0
    assert record["cache"] == str(tmp_path / "cache") and 0.0 <= record["eer"] <= 1.0

    # Again, as text: every embedding comes from the cache, the figures are the same.
    again = _eval(tiny_bundle, demo_prepared, *args, "--top-k", "5")
    assert again.exit_code == 0, again.output
    text = again.stdout
    assert "0 embedded, 144 from the cache" in text
    assert "condition: 2 s crop from the start" in text
    assert "asnorm against 22 cohort speakers" in text and "top_k 5" in text
    assert "minDCF (p_target=0.01" in text and "minDCF (p_target=0.05" in text
    assert "identification, inclusive (10 speakers, 100 utterances)" in text
    assert "identification, leave-one-out" in text
    default_top_k = _eval(tiny_bundle, demo_prepared, *args)
    assert "note: top_k = the cohort size 22 (the default 300 is larger)" in default_top_k.stdout
    assert f"EER: {100 * record['eer']:.2f}%" in default_top_k.stdout


def test_multi_crop_text(tmp_path, tiny_bundle, demo_prepared):
    args = ["--condition", "multi_crop", "--crop-s", "2.5", "--num-crops", "2"]
    result = _eval(tiny_bundle, demo_prepared, *args, "--cache", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "condition: mean of 2 x 2.5 s crops" in result.stdout
    assert "scores: raw cosine" in result.stdout
    assert len(list(tmp_path.glob("*_multi_crop_2x2.5s.npz"))) == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--condition", "half"], "--condition must be one of full, crop, multi_crop"),
        (["--p-target", "1.5"], "--p-target must be strictly between 0 and 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--crop-s", "2"], "--crop-s applies to --condition crop or multi_crop"),
        (
            ["--condition", "crop", "--num-crops", "3"],
            "--num-crops applies to --condition multi_crop",
        ),
        (["--condition", "crop", "--crop-s", "0"], "--crop-s must be a positive"),
        (["--norm", "snorm"], "--norm snorm needs --cohort MANIFEST"),
        (["--norm", "qnorm"], "--norm must be one of none, znorm"),
        (
            ["--norm", "snorm", "--cohort", "COHORT", "--top-k", "5"],
            "--top-k applies to --norm asnorm",
        ),
        (["--cohort", "COHORT"], "is used only with --norm"),
        (["--norm", "asnorm", "--cohort", "COHORT", "--top-k", "50"], "(22), got 50"),
        (["--norm", "asnorm", "--cohort", "MISSING"], "missing.jsonl"),
    ],
)
def test_errors_are_one_line_naming_the_option(
    tmp_path, tiny_bundle, demo_prepared, cohort_manifest, args, expected
):
    replace = {"COHORT": str(cohort_manifest), "MISSING": str(tmp_path / "missing.jsonl")}
    result = _eval(tiny_bundle, demo_prepared, *[replace.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert result.output.startswith("error: ")
    if expected.startswith("(22)"):
        assert str(cohort_manifest) in result.output


def test_cache_that_is_a_file_is_an_error(tmp_path, tiny_bundle, demo_prepared):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    result = _eval(tiny_bundle, demo_prepared, "--cache", str(not_a_folder))
    assert (
        result.exit_code == 2 and "--cache" in result.output and str(not_a_folder) in result.output
    )
