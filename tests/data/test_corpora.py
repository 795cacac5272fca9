"""Tests of speakerprint.data.corpora: small trees in each corpus's published layout and file-name
pattern (short generated audio), including the odd cases, and the manifests, speakers, trial lists
and errors the preparers make of them. Also the optional manifest fields (offset_s, gender) and
reading a segment's span."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speakerprint.audio import load_audio
from speakerprint.cli.main import app
from speakerprint.data.corpora import (
    VOX1_O_SPEAKERS,
    prepare_cnceleb,
    prepare_kaldi,
    prepare_librispeech,
    prepare_vctk,
    prepare_voxceleb1,
    prepare_voxceleb2,
    read_librispeech_speakers,
)
from speakerprint.data.dataset import CropDataset, UtteranceDataset
from speakerprint.data.manifest import Utterance, read_manifest, write_manifest
from speakerprint.data.trials import read_trials
from speakerprint.errors import ManifestError

SR = 16000


def _audio(path: Path, seconds: float = 0.25, sr: int = SR, seed: int = 0) -> Path:
    """A short noise burst; FLAC or WAV by the extension, AAC in M4A through PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * sr)).astype(np.float32)
    if path.suffix == ".m4a":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("aac", rate=sr)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(wav[None, :], format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    else:
        sf.write(path, wav, sr)
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _ids(path: Path) -> list[str]:
    return [u.utt_id for u in read_manifest(path)]


def _skipped(path: Path) -> dict[str, str]:
    rows = [line.split("\t") for line in _lines(path)[1:]]
    return {Path(p).name: reason for p, reason in rows}


# ---------------------------------------------------------------- VoxCeleb1


@pytest.fixture
def real_vox1_lines(shared_data) -> list[str]:
    """The first lines of the real VoxCeleb1-O list, whose files the fixture tree then holds."""
    return _lines(shared_data / "voxceleb1" / "veri_test.txt")[:6]


def test_voxceleb1_combined_layout_with_the_real_o_list(tmp_path, real_vox1_lines):
    root = tmp_path / "vox1"
    o_ids = sorted({f for line in real_vox1_lines for f in line.split()[1:]})
    for i, utt_id in enumerate(o_ids):
        _audio(root / "wav" / utt_id, seed=i)
    train_ids = ["id10001/1zcIwhmdeo4/00001.wav", "id10001/7gWzIy6yIIk/00002.wav"]
    train_ids += ["id10002/6WO410QOeuo/00001.wav"]
    for utt_id in train_ids:
        _audio(root / "wav" / utt_id)
    lists = tmp_path / "meta"
    lists.mkdir()
    (lists / "veri_test.txt").write_text("\n".join(real_vox1_lines) + "\n")
    e_lines = [f"1 {train_ids[0]} {train_ids[1]}", f"0 {train_ids[0]} {o_ids[0]}"]
    (lists / "list_test_all2.txt").write_text("\n".join(e_lines) + "\n")

    r = prepare_voxceleb1(root, tmp_path / "out", trials_dir=lists)

    assert _ids(r.manifests["train"]) == sorted(train_ids)
    assert _ids(r.manifests["test"]) == o_ids
    assert _ids(r.manifests["all"]) == sorted(train_ids + o_ids)
    assert {u.speaker for u in read_manifest(r.manifests["test"])} <= VOX1_O_SPEAKERS
    num_test_speakers = len({i.split("/")[0] for i in o_ids})
    assert r.num_speakers == {"train": 2, "test": num_test_speakers, "all": 2 + num_test_speakers}
    # Written in the official format, line for line.
    assert sorted(r.trials) == ["vox1_E_cleaned", "vox1_O"]
    assert _lines(r.trials["vox1_O"]) == real_vox1_lines
    assert _lines(r.trials["vox1_E_cleaned"]) == e_lines
    assert r.num_trials == {"vox1_O": 6, "vox1_E_cleaned": 2}
    utt = read_manifest(r.manifests["test"])[0]
    assert utt.sample_rate == SR and utt.duration_s == pytest.approx(0.25)


def test_voxceleb1_split_archives_skips_and_missing_trial_lines(tmp_path):
    root = tmp_path / "vox1"
    _audio(root / "vox1_dev_wav" / "wav" / "id10001" / "aaa" / "00001.wav")
    _audio(root / "vox1_dev_wav" / "wav" / "id10001" / "aaa" / "00002.wav")
    _audio(root / "vox1_test_wav" / "wav" / "id10270" / "bbb" / "00001.wav")
    _audio(root / "vox1_test_wav" / "wav" / "id10271" / "ccc" / "00001.wav")
    (root / "vox1_test_wav" / "wav" / "id10271" / "ccc" / "00002.wav").write_bytes(b"not audio")
    _audio(root / "vox1_dev_wav" / "wav" / "id10001" / "stray.wav")  # out of the layout
    lists = tmp_path / "lists"
    lists.mkdir()
    lines = [
        "1 id10270/bbb/00001.wav id10270/bbb/00001.wav",
        "0 id10270/bbb/00001.wav id10271/ccc/00002.wav",  # unreadable, so skipped
        "",
        "0 id10270/bbb/00001.wav id10271/ccc/00001.wav",
        "1 id10271/zzz/00009.wav id10271/zzz/00008.wav",  # never existed
    ]
    (lists / "veri_test.txt").write_text("\n".join(lines) + "\n")

    with pytest.raises(ManifestError) as info:
        prepare_voxceleb1(root, tmp_path / "out", trials_dir=lists)
    message = str(info.value)
    veri = lists / "veri_test.txt"
    assert f"{veri}:2: 'id10271/ccc/00002.wav' not in the prepared manifest" in message
    assert f"{veri}:5: 'id10271/zzz/00009.wav' and 'id10271/zzz/00008.wav'" in message
    assert f"{veri}:1:" not in message and f"{veri}:4:" not in message
    assert len(_lines(tmp_path / "out" / "vox1_O.missing.txt")) == 2

    r = prepare_voxceleb1(root, tmp_path / "out", trials_dir=lists, drop_missing_trials=True)
    assert [(t.enrol, t.test) for t in read_trials(r.trials["vox1_O"])] == [
        tuple(lines[0].split()[1:]),
        tuple(lines[3].split()[1:]),
    ]
    assert any("left out 2 trials" in note for note in r.notes)
    skipped = _skipped(r.skipped)
    assert set(skipped) == {"00002.wav", "stray.wav"}
    assert "layout" in skipped["stray.wav"]
    assert _ids(r.manifests["train"]) == ["id10001/aaa/00001.wav", "id10001/aaa/00002.wav"]


def test_voxceleb1_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ManifestError, match="no VoxCeleb1 audio"):
        prepare_voxceleb1(tmp_path, tmp_path / "out")
    _audio(tmp_path / "wav" / "id10001" / "a" / "00001.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="none of the VoxCeleb1 trial lists"):
        prepare_voxceleb1(tmp_path, tmp_path / "out", trials_dir=tmp_path / "empty")
    (tmp_path / "empty" / "veri_test.txt").write_text("1 a\nyes a b\n")
    with pytest.raises(ManifestError) as info:
        prepare_voxceleb1(tmp_path, tmp_path / "out", trials_dir=tmp_path / "empty")
    assert ":1: expected 3 fields" in str(info.value) and ":2: label must be 0 or 1" in str(
        info.value
    )


# ---------------------------------------------------------------- VoxCeleb2


def test_voxceleb2_reads_m4a_directly(tmp_path):
    root = tmp_path / "vox2"
    _audio(root / "dev" / "aac" / "id00012" / "21Uxsk56VDQ" / "00001.m4a", seconds=0.5)
    _audio(root / "dev" / "aac" / "id00015" / "0fijmz4vTVU" / "00001.m4a", seconds=0.5)
    _audio(root / "test" / "aac" / "id00017" / "01dfn2spqyE" / "00001.m4a", seconds=0.5)
    r = prepare_voxceleb2(root, tmp_path / "out")
    train = read_manifest(r.manifests["train"])
    assert [u.utt_id for u in train] == [
        "id00012/21Uxsk56VDQ/00001.m4a",
        "id00015/0fijmz4vTVU/00001.m4a",
    ]
    assert [u.speaker for u in train] == ["id00012", "id00015"]
    assert _ids(r.manifests["test"]) == ["id00017/01dfn2spqyE/00001.m4a"]
    # The AAC encoder adds priming samples; the header duration is close to what was written.
    assert train[0].duration_s == pytest.approx(0.5, abs=0.1) and train[0].sample_rate == SR
    assert len(load_audio(train[0].path)) == pytest.approx(0.5 * SR, abs=0.1 * SR)
    assert r.trials == {}
    with pytest.raises(ManifestError, match="dev/aac"):
        prepare_voxceleb2(tmp_path / "out", tmp_path / "out2")


# ---------------------------------------------------------------- LibriSpeech

SPEAKERS_TXT = """\
; Some comment lines
;ID  |SEX| SUBSET           |MINUTES| NAME
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
60   | M | train-clean-100  | 20.18 | |CBW|Simon
1089 | M | test-clean       |  7.18 | Arthur
"""


def _librispeech(tmp_path: Path) -> Path:
    base = tmp_path / "LibriSpeech"
    (base).mkdir(parents=True)
    (base / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    for subset, speaker, chapter, n in [
        ("train-clean-100", "19", "198", 2),
        ("train-clean-100", "60", "121082", 1),
        ("test-clean", "1089", "134686", 2),
    ]:
        folder = base / subset / speaker / chapter
        names = [f"{speaker}-{chapter}-{i:04d}" for i in range(n)]
        for name in names:
            _audio(folder / f"{name}.flac")
        listed = names + ([f"{speaker}-{chapter}-0099"] if speaker == "19" else [])
        (folder / f"{speaker}-{chapter}.trans.txt").write_text(
            "".join(f"{name} SOME WORDS\n" for name in listed)
        )
    _audio(base / "train-clean-100" / "19" / "198" / "19-999-0000.flac")  # wrong chapter
    return tmp_path


def test_librispeech_subsets_speakers_and_gender(tmp_path):
    root = _librispeech(tmp_path)
    assert read_librispeech_speakers(root / "LibriSpeech" / "SPEAKERS.TXT") == {
        "19": "f",
        "60": "m",
        "1089": "m",
    }
    r = prepare_librispeech(root, tmp_path / "out")
    assert sorted(r.manifests) == ["test-clean", "train-clean-100"]
    train = read_manifest(r.manifests["train-clean-100"])
    assert [u.utt_id for u in train] == [
        "train-clean-100/19/198/19-198-0000.flac",
        "train-clean-100/19/198/19-198-0001.flac",
        "train-clean-100/60/121082/60-121082-0000.flac",
    ]
    assert [(u.speaker, u.gender) for u in train] == [("19", "f"), ("19", "f"), ("60", "m")]
    skipped = _skipped(r.skipped)
    assert skipped["19-198-0099.flac"] == "listed in 19-198.trans.txt but missing"
    assert "layout" in skipped["19-999-0000.flac"]

    only = prepare_librispeech(root / "LibriSpeech", tmp_path / "only", subsets=["test-clean"])
    assert list(only.manifests) == ["test-clean"] and only.num_speakers["test-clean"] == 1
    with pytest.raises(ManifestError, match="train-other-500 not found.*present: train-clean-100"):
        prepare_librispeech(root, tmp_path / "x", subsets=["train-other-500"])


def test_librispeech_bad_speakers_file_lists_lines(tmp_path):
    path = tmp_path / "SPEAKERS.TXT"
    path.write_text(";ID|SEX\n19 | F | x | 1 | A\nnonsense\n20 | Q | x | 1 | B\n")
    with pytest.raises(ManifestError) as info:
        read_librispeech_speakers(path)
    assert f"{path}:3:" in str(info.value) and f"{path}:4:" in str(info.value)


# ---------------------------------------------------------------- VCTK

VCTK_INFO_092 = """\
ID  AGE  GENDER  ACCENTS  REGION COMMENTS
p225  23  F    English    Southern  England
p280  25  F    France
p315  23  M    American    Connecticut  (Text is lost)
"""


def _vctk_092(tmp_path: Path) -> Path:
    root = tmp_path / "VCTK-Corpus-0.92"
    audio = root / "wav48_silence_trimmed"
    for speaker, mics in [
        ("p225", ("mic1", "mic2")),
        ("p280", ("mic1",)),
        ("p315", ("mic1", "mic2")),
    ]:
        for n in (1, 2):
            for mic in mics:
                _audio(audio / speaker / f"{speaker}_{n:03d}_{mic}.flac", sr=48000)
        if speaker != "p315":  # p315's transcripts are lost
            (root / "txt" / speaker).mkdir(parents=True)
            (root / "txt" / speaker / f"{speaker}_001.txt").write_text("Please call Stella.\n")
    for mic in ("mic1", "mic2"):
        _audio(audio / "s5" / f"s5_001_{mic}.flac", sr=48000)
    (root / "txt" / "s5").mkdir(parents=True)
    (audio / "log.txt").write_text("not audio\n")
    (root / "speaker-info.txt").write_text(VCTK_INFO_092)
    return root


def test_vctk_092_microphones_and_odd_speakers(tmp_path):
    root = _vctk_092(tmp_path)
    r = prepare_vctk(root, tmp_path / "mic1")
    utts = read_manifest(r.manifests["all"])
    assert {u.speaker for u in utts} == {"p225", "p280", "p315", "s5"}
    assert all(u.utt_id.endswith("_mic1.flac") for u in utts) and len(utts) == 7
    assert utts[0].utt_id == "p225/p225_001_mic1.flac" and utts[0].sample_rate == 48000
    genders = {u.speaker: u.gender for u in utts}
    assert genders == {"p225": "f", "p280": "f", "p315": "m", "s5": None}
    assert any("p315" in n and "transcripts" in n for n in r.notes)
    assert any("s5" in n and "speaker-info" in n for n in r.notes)
    assert not any("p280" in n for n in r.notes)  # mic1 was asked for, and p280 has it

    both = prepare_vctk(root, tmp_path / "both", mic="both")
    assert both.num_utts["all"] == 7 + 5 and "p280: no mic2 files" in both.notes
    mic2 = prepare_vctk(root, tmp_path / "mic2", mic="mic2")
    assert {u.speaker for u in read_manifest(mic2.manifests["all"])} == {"p225", "p315", "s5"}
    with pytest.raises(ValueError, match="mic must be one of"):
        prepare_vctk(root, tmp_path / "x", mic="mic3")


def test_vctk_080_layout(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    for speaker in ("p225", "p226"):
        for n in (1, 2):
            _audio(root / "wav48" / speaker / f"{speaker}_{n:03d}.wav", sr=48000)
    (root / "speaker-info.txt").write_text(
        "ID  AGE  GENDER  ACCENTS  REGION\n225  23  F    English    Southern  England\n"
        "226  22  M    English    Surrey\n"
    )
    r = prepare_vctk(tmp_path, tmp_path / "out")  # the folder holding VCTK-Corpus
    utts = read_manifest(r.manifests["all"])
    assert [u.utt_id for u in utts][:2] == ["p225/p225_001.wav", "p225/p225_002.wav"]
    assert {(u.speaker, u.gender) for u in utts} == {("p225", "f"), ("p226", "m")}
    with pytest.raises(ValueError, match="one microphone"):
        prepare_vctk(root, tmp_path / "x", mic="mic2")


# ---------------------------------------------------------------- CN-Celeb


def _cnceleb(tmp_path: Path) -> Path:
    cnc1 = tmp_path / "CN-Celeb_flac"
    for speaker, files in [
        ("id00000", ["singing-01-001", "speech-02-003"]),
        ("id00001", ["live_broadcast-01-001"]),
        ("id00800", ["interview-01-001"]),  # an eval speaker's raw recording
    ]:
        for name in files:
            _audio(cnc1 / "data" / speaker / f"{name}.flac")
    (cnc1 / "dev").mkdir()
    (cnc1 / "dev" / "dev.lst").write_text("id00000\nid00001\n")
    for name in ("id00800-enroll", "id00801-enroll"):
        _audio(cnc1 / "eval" / "enroll" / f"{name}.flac")
    for name in ("id00800-singing-01-001", "id00801-vlog-02-004"):
        _audio(cnc1 / "eval" / "test" / f"{name}.flac")
    (cnc1 / "eval" / "lists").mkdir()
    (cnc1 / "eval" / "lists" / "trials.lst").write_text(
        "id00800-enroll test/id00800-singing-01-001.wav 1\n"
        "id00800-enroll test/id00801-vlog-02-004.wav 0\n"
        "id00801-enroll test/id00801-vlog-02-004.wav 1\n"
    )
    cnc2 = tmp_path / "CN-Celeb2_flac"
    _audio(cnc2 / "data" / "id10000" / "recitation-01-001.flac")
    (cnc2 / "spk.lst").write_text("id10000\n")
    return tmp_path


def test_cnceleb_train_eval_and_trials(tmp_path):
    root = _cnceleb(tmp_path)
    r = prepare_cnceleb(root, tmp_path / "out")
    train = read_manifest(r.manifests["train"])
    assert [u.utt_id for u in train] == [
        "CN-Celeb2_flac/data/id10000/recitation-01-001.flac",
        "CN-Celeb_flac/data/id00000/singing-01-001.flac",
        "CN-Celeb_flac/data/id00000/speech-02-003.flac",
        "CN-Celeb_flac/data/id00001/live_broadcast-01-001.flac",
    ]
    assert {u.speaker for u in train} == {"id00000", "id00001", "id10000"}  # not id00800
    evaluation = read_manifest(r.manifests["eval"])
    assert {u.utt_id: u.speaker for u in evaluation} == {
        "CN-Celeb_flac/eval/enroll/id00800-enroll.flac": "id00800",
        "CN-Celeb_flac/eval/enroll/id00801-enroll.flac": "id00801",
        "CN-Celeb_flac/eval/test/id00800-singing-01-001.flac": "id00800",
        "CN-Celeb_flac/eval/test/id00801-vlog-02-004.flac": "id00801",
    }
    trials = read_trials(r.trials["cnceleb1_eval"])
    assert [(t.label, Path(t.enrol).name, Path(t.test).name) for t in trials] == [
        (1, "id00800-enroll.flac", "id00800-singing-01-001.flac"),
        (0, "id00800-enroll.flac", "id00801-vlog-02-004.flac"),
        (1, "id00801-enroll.flac", "id00801-vlog-02-004.flac"),
    ]
    # Every trial is same-speaker exactly when its label says so.
    speaker = {u.utt_id: u.speaker for u in evaluation}
    assert all((speaker[t.enrol] == speaker[t.test]) == bool(t.label) for t in trials)


def test_cnceleb_reports_missing_trial_files_and_id_clashes(tmp_path):
    root = _cnceleb(tmp_path)
    (root / "CN-Celeb_flac" / "eval" / "test" / "id00801-vlog-02-004.flac").unlink()
    with pytest.raises(ManifestError) as info:
        prepare_cnceleb(root, tmp_path / "out")
    assert re.search(r"trials\.lst:2: .*not in the prepared manifest", str(info.value))
    assert "trials.lst:3:" in str(info.value) and "trials.lst:1:" not in str(info.value)
    _audio(root / "CN-Celeb2_flac" / "data" / "id00000" / "x-01-001.flac")
    (root / "CN-Celeb2_flac" / "spk.lst").write_text("id10000\nid00000\n")
    with pytest.raises(ManifestError, match="both CN-Celeb1 .* id00000"):
        prepare_cnceleb(root, tmp_path / "out", drop_missing_trials=True)


# ---------------------------------------------------------------- Kaldi


def test_kaldi_data_dir_with_segments_genders_and_trials(tmp_path):
    a = _audio(tmp_path / "audio" / "rec_a.wav", seconds=3.0)
    b = _audio(tmp_path / "audio" / "rec_b.flac", seconds=2.0)
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text(f"rec_a {a}\nrec_b audio/rec_b.flac\n")
    (data / "segments").write_text(
        "spk1-a-000 rec_a 0.00 1.25\nspk1-a-001 rec_a 1.50 3.00\nspk2-b-000 rec_b 0.5 -1\n"
    )
    (data / "utt2spk").write_text("spk1-a-000 spk1\nspk1-a-001 spk1\nspk2-b-000 spk2\n")
    (data / "spk2gender").write_text("spk1 f\nspk2 m\n")
    (data / "trials").write_text("spk1-a-000 spk1-a-001 target\nspk1-a-000 spk2-b-000 nontarget\n")
    r = prepare_kaldi(data, tmp_path / "out", path_root=tmp_path)
    utts = read_manifest(r.manifests["train"])
    assert [(u.utt_id, u.offset_s, u.duration_s, u.gender) for u in utts] == [
        ("spk1-a-000", 0.0, 1.25, "f"),
        ("spk1-a-001", 1.5, 1.5, "f"),
        ("spk2-b-000", 0.5, 1.5, "m"),
    ]
    assert utts[2].path == str(b)
    assert _lines(r.trials["trials"]) == ["1 spk1-a-000 spk1-a-001", "0 spk1-a-000 spk2-b-000"]

    # Without segments the wav.scp ids are the utterances, whole files.
    (data / "segments").unlink()
    (data / "trials").unlink()
    (data / "utt2spk").write_text("rec_a spk1\nrec_b spk2\n")
    r = prepare_kaldi(data, tmp_path / "out2", path_root=tmp_path, name="whole")
    whole = read_manifest(r.manifests["whole"])
    assert [(u.utt_id, u.offset_s, u.duration_s) for u in whole] == [
        ("rec_a", None, 3.0),
        ("rec_b", None, 2.0),
    ]


def test_kaldi_commands_and_bad_lines_are_reported_together(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    a = _audio(tmp_path / "a.wav")
    (data / "wav.scp").write_text(
        f"r1 {a}\nr2 sox /x/r2.sph -t wav - |\n\nr3 flac -c -d -s /x/r3.flac |\nr4 feats.ark:1234\n"
    )
    (data / "utt2spk").write_text("r1 s1\nr2 s1\nr3 s2\nr4\n")
    with pytest.raises(ManifestError) as info:
        prepare_kaldi(data, tmp_path / "out")
    message = str(info.value)
    scp = data / "wav.scp"
    assert f"{scp}:2: a command ('... |') is not supported" in message
    assert f"{scp}:4: a command ('... |') is not supported" in message
    assert f"{scp}:5: an archive or stream entry is not supported" in message
    assert f"{data / 'utt2spk'}:4: expected at least 2 fields" in message
    assert f"{scp}:1:" not in message

    (data / "wav.scp").write_text(f"r1 {a}\n")
    (data / "utt2spk").write_text("r1 s1\n")
    (data / "segments").write_text("u1 r1 0 9.0\nu2 r9 0 1\nu3 r1 0 0.1\n")
    with pytest.raises(ManifestError) as info:
        prepare_kaldi(data, tmp_path / "out")
    message = str(info.value)
    seg = data / "segments"
    assert f"{seg}:1: utterance 'u1' is not in utt2spk" in message
    assert f"{seg}:2: recording 'r9' is not in wav.scp" in message


# ---------------------------------------------------------------- VAD and segments


def _speech_with_pauses(path: Path) -> list[tuple[float, float]]:
    """0.5 s silence, 1 s noise, 1 s silence, 0.8 s noise, 0.5 s silence: two known spans."""
    rng = np.random.default_rng(1)
    parts, spans, t = [], [], 0.0
    for seconds, loud in [(0.5, False), (1.0, True), (1.0, False), (0.8, True), (0.5, False)]:
        n = int(seconds * SR)
        parts.append(rng.uniform(-0.5, 0.5, n) if loud else np.zeros(n))
        if loud:
            spans.append((t, t + seconds))
        t += seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(parts).astype(np.float32), SR)
    return spans


def test_vad_splits_training_manifests_into_readable_segments(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    spans = _speech_with_pauses(root / "wav48" / "p225" / "p225_001.wav")
    _speech_with_pauses(root / "wav48" / "p226" / "p226_001.wav")
    sf.write(root / "wav48" / "p226" / "p226_002.wav", np.zeros(SR, np.float32), SR)
    r = prepare_vctk(root, tmp_path / "out", vad="energy")
    utts = read_manifest(r.manifests["all"])
    p225 = [u for u in utts if u.speaker == "p225"]
    assert len(p225) == 2 and len(utts) == 4
    for utt, (start, end) in zip(p225, spans):
        assert utt.offset_s == pytest.approx(start - 0.05, abs=0.02)
        assert utt.offset_s + utt.duration_s == pytest.approx(end + 0.05, abs=0.02)
        assert (
            utt.utt_id
            == f"p225/p225_001.wav@{utt.offset_s:.2f}-{utt.offset_s + utt.duration_s:.2f}"
        )
    assert _skipped(r.skipped) == {"p226_002.wav": "no speech found by the energy VAD"}

    # Readers see only the span: the dataset loads exactly the segment's samples.
    segment = p225[1]
    whole = load_audio(segment.path)
    wav, _ = UtteranceDataset([segment])[0]
    start = round(segment.offset_s * SR)
    assert len(wav) == round(segment.duration_s * SR)
    np.testing.assert_array_equal(wav, whole[start : start + len(wav)])
    crops = CropDataset([segment], speaker_to_label={"p225": 0}, crop_s=0.5)
    crop, label = crops[(0, 3)]
    offset = _find(whole, crop)
    assert label == 0 and segment.offset_s * SR <= offset
    assert offset + len(crop) <= (segment.offset_s + segment.duration_s) * SR + 1


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Start of ``needle`` in ``haystack`` (exact samples)."""
    for start in np.flatnonzero(haystack == needle[0]):
        if np.array_equal(haystack[start : start + len(needle)], needle):
            return int(start)
    raise AssertionError("crop not found in the file")


def test_vad_leaves_evaluation_manifests_whole(tmp_path):
    root = tmp_path / "vox1"
    _speech_with_pauses(root / "wav" / "id10001" / "aaa" / "00001.wav")
    _speech_with_pauses(root / "wav" / "id10270" / "bbb" / "00001.wav")
    r = prepare_voxceleb1(root, tmp_path / "out", vad="energy")
    assert r.num_utts == {"train": 2, "test": 1, "all": 2}
    assert read_manifest(r.manifests["test"])[0].offset_s is None
    with pytest.raises(ValueError, match="unknown VAD method 'webrtc'"):
        prepare_voxceleb1(root, tmp_path / "out", vad="webrtc")


def test_manifest_optional_fields_round_trip_and_are_checked(tmp_path):
    utts = [
        Utterance("a", "/x/a.wav", "s", 1.5, 16000),
        Utterance("a@0.50-2.00", "/x/a.wav", "s", 1.5, 16000, offset_s=0.5, gender="f"),
    ]
    path = tmp_path / "m.jsonl"
    write_manifest(path, utts)
    assert read_manifest(path) == utts
    first, second = (json.loads(line) for line in _lines(path))
    assert "offset_s" not in first and "gender" not in first  # old manifests stay as they were
    assert second["offset_s"] == 0.5 and second["gender"] == "f"
    path.write_text(
        '{"utt_id": "a", "path": "a", "speaker": "s", "duration_s": 1, "sample_rate": 8000, '
        '"offset_s": -1}\n'
        '{"utt_id": "b", "path": "b", "speaker": "s", "duration_s": 1, "sample_rate": 8000, '
        '"gender": 3}\n'
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert f"{path}:1: offset_s must be finite and >= 0, got -1" in str(info.value)
    assert f"{path}:2: gender must be str, got 3" in str(info.value)


# ---------------------------------------------------------------- CLI


def test_cli_prepare_commands(tmp_path, real_vox1_lines):
    root = tmp_path / "vox1"
    for utt_id in {f for line in real_vox1_lines for f in line.split()[1:]}:
        _audio(root / "wav" / utt_id)
    (tmp_path / "veri_test.txt").write_text("\n".join(real_vox1_lines) + "\n")
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["prepare", "voxceleb1", str(root), "--out", str(out), "--trials-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"vox1_O trials: 6 -> {out / 'vox1_O.txt'}" in result.output
    assert "train: 0 utterances of 0 speakers" in result.output

    libri = _librispeech(tmp_path / "ls")
    result = runner.invoke(
        app,
        ["prepare", "librispeech", str(libri), "--out", str(out), "--subsets", "test-clean"],
    )
    assert result.exit_code == 0, result.output
    assert "test-clean: 2 utterances of 1 speakers" in result.output

    result = runner.invoke(app, ["prepare", "vctk", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "error: no VCTK audio" in result.output
    result = runner.invoke(
        app, ["prepare", "vctk", str(tmp_path), "--out", str(out), "--mic", "mic3"]
    )
    assert result.exit_code != 0 and "mic3" in result.output
