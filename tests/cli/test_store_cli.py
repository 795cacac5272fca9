"""`speakerprint enroll / identify / speakers / remove` on the demo speech with the shipped model."""

import json

import pytest
import torch
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.features import FbankConfig
from speakerprint.inference import default_model_path
from speakerprint.models import create_model
from speakerprint.models.bundle import Threshold, save_bundle

runner = CliRunner()

pytestmark = pytest.mark.skipif(
    not default_model_path().is_dir(), reason="the default model is not installed"
)


@pytest.fixture(scope="module")
def speakers(demo_root):
    """Three demo speakers' recordings, sorted."""
    folders = sorted(p for p in demo_root.iterdir() if p.is_dir())[:3]
    return {f.name: [str(p) for p in sorted(f.glob("*.opus"))] for f in folders}


def test_enroll_identify_list_remove(tmp_path, speakers):
    db = str(tmp_path / "speakers.db")
    (ann, ann_files), (bob, bob_files), (_, cid_files) = speakers.items()
    result = runner.invoke(app, ["enroll", db, ann, *ann_files[:3]])
    assert result.exit_code == 0, result.output
    assert f"enrolled {ann}: 3 new recording(s), 3 in all" in result.output
    result = runner.invoke(app, ["enroll", db, bob, *bob_files[:2]])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["enroll", db, bob, bob_files[2]])
    assert result.exit_code == 0 and "3 in all" in result.output

    result = runner.invoke(app, ["speakers", db])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [f"{ann}\t3", f"{bob}\t3"]
    assert "2 speaker(s)" in result.output

    result = runner.invoke(app, ["identify", db, ann_files[4], "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["speaker"] == ann and answer["known"]
    assert [c["name"] for c in answer["candidates"]] == [ann, bob]
    assert answer["threshold"] == pytest.approx(0.3703, abs=1e-3)  # the bundle's EER point
    assert "eer" in answer["threshold_source"]

    result = runner.invoke(app, ["identify", db, bob_files[4]])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{bob}: best score") and f"1. {bob}" in result.output

    # A threshold no cosine reaches: the best candidate is still listed, the answer is unknown.
    result = runner.invoke(app, ["identify", db, cid_files[0], "--threshold", "1.01", "--json"])
    answer = json.loads(result.stdout)
    assert answer["speaker"] is None and not answer["known"] and answer["threshold"] == 1.01
    result = runner.invoke(app, ["identify", db, cid_files[0], "--threshold", "1.01"])
    assert result.output.startswith("unknown: best score")

    result = runner.invoke(app, ["remove", db, ann])
    assert result.exit_code == 0 and f"removed {ann} (3 recording(s))" in result.output
    result = runner.invoke(app, ["identify", db, ann_files[4], "--json", "--threshold", "-1"])
    assert json.loads(result.stdout)["speaker"] == bob  # the only one left
    result = runner.invoke(app, ["remove", db, ann])
    assert result.exit_code == 2 and f"no speaker '{ann}'" in result.output


def test_errors_name_the_problem(tmp_path, speakers):
    db = str(tmp_path / "speakers.db")
    (ann, ann_files), _, _ = speakers.items()
    result = runner.invoke(app, ["identify", db, ann_files[0]])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["enroll", db, ann, ann_files[0], str(tmp_path / "nope.wav")])
    assert result.exit_code == 2 and "nope.wav" in result.output
    assert not (tmp_path / "speakers.db").exists()  # a bad file leaves no half-made store

    assert runner.invoke(app, ["enroll", db, ann, ann_files[0]]).exit_code == 0
    torch.manual_seed(0)
    other = save_bundle(
        tmp_path / "other",
        create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=192),
        FbankConfig(),
        threshold=Threshold(0.5, "eer", "x"),
    )
    for command in (["enroll", db, "bob", ann_files[1]], ["identify", db, ann_files[1]]):
        result = runner.invoke(app, [*command, "--model", str(other)])
        assert result.exit_code == 2 and "another model" in result.output, result.output
        assert "Traceback" not in result.output
    result = runner.invoke(app, ["identify", db, ann_files[1], "--top-k", "0"])
    assert result.exit_code == 2 and "--top-k" in result.output


def test_stores_made_by_0_1_0_keep_working(tmp_path, speakers):
    """A store whose recorded fingerprint hashed the 0.1.0 version in is migrated by enroll and
    identify (with the model recorded in the store, or given), not refused as another model's."""
    import sqlite3

    from speakerprint.inference import SpeakerEncoder
    from speakerprint.inference.store import EnrollmentStore
    from speakerprint.models.bundle import legacy_model_fingerprints, model_fingerprint

    torch.manual_seed(0)
    bundle = save_bundle(
        tmp_path / "bundle",
        create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24),
        FbankConfig(),
    )
    (ann, ann_files), (bob, bob_files), _ = speakers.items()
    enc = SpeakerEncoder.from_pretrained(bundle)
    (old,) = legacy_model_fingerprints(bundle)
    for db in (tmp_path / "identify.db", tmp_path / "enroll.db"):
        with EnrollmentStore.open(
            db, model_fingerprint=old, embed_dim=24, model_path=str(bundle), create=True
        ) as store:
            store.enroll(ann, enc.embed(ann_files[0]), model_fingerprint=old)

    result = runner.invoke(
        app, ["identify", str(tmp_path / "identify.db"), ann_files[1], "--threshold", "-1"]
    )
    assert result.exit_code == 0 and result.output.startswith(f"{ann}:"), result.output
    result = runner.invoke(
        app, ["enroll", str(tmp_path / "enroll.db"), bob, bob_files[0], "--model", str(bundle)]
    )
    assert (
        result.exit_code == 0 and f"enrolled {bob}: 1 new recording(s), 1 in all" in result.output
    )
    for db in (tmp_path / "identify.db", tmp_path / "enroll.db"):
        with sqlite3.connect(db) as raw:
            (recorded,) = raw.execute(
                "SELECT value FROM meta WHERE key = 'model_fingerprint'"
            ).fetchone()
        assert recorded == model_fingerprint(bundle) != old
