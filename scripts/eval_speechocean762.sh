#!/usr/bin/env bash
# Evaluation figures of the shipped model (issue 5) on the 25 speechocean762 speakers it never
# saw: raw cosine vs z/t/s-norm vs AS-norm (cohort: the 100 training speakers, one mean each),
# full-length vs 3 s crop vs multi-crop test conditions, and closed-set identification top-1/top-5,
# inclusive vs leave-one-out, and open-set identification. Every figure is one `speakerprint eval`
# call; all share one embedding cache, so each condition's audio is embedded once. Writes
# docs/results/eval_speechocean762.md, each row with the command that made it, and a report of
# five of the systems side by side (DET curves, score histograms, threshold tables) with
# `speakerprint report` into docs/results/eval_speechocean762_report/.
#   OMP_NUM_THREADS=1 bash scripts/eval_speechocean762.sh
# In a fresh shell without the package installed:
#   OMP_NUM_THREADS=1 PYTHONPATH=src SPEAKERPRINT=".venv/bin/python -m speakerprint" \
#     bash scripts/eval_speechocean762.sh
set -euo pipefail
cd "$(dirname "$0")/.."
read -ra SPEAKERPRINT_CMD <<< "${SPEAKERPRINT:-speakerprint}"
PYTHON=${PYTHON:-python}
if [ "${SPEAKERPRINT_CMD[1]:-}" = "-m" ]; then PYTHON=${SPEAKERPRINT_CMD[0]}; fi
BUNDLE=${BUNDLE:-src/speakerprint/pretrained/ecapa_c512_speechocean762}
DATA=${DATA:-runs/so762/data}
OUT=${OUT:-runs/eval_so762}
CACHE=$OUT/cache
REPORT=${REPORT:-docs/results/eval_speechocean762.md}
SYSTEMS_REPORT=${SYSTEMS_REPORT:-docs/results/eval_speechocean762_report}

if [ ! -f "$DATA/dev.jsonl" ] || [ ! -f "$DATA/dev_trials.txt" ] || [ ! -f "$DATA/train.jsonl" ]; then
  "${SPEAKERPRINT_CMD[@]}" prepare folder ../shared/data/speechocean762/train --out "$DATA" \
    --dev-speakers 25 --seed 0
fi
mkdir -p "$OUT"
: > "$OUT/commands.tsv"
start=$(date +%s)

# run NAME ARGS...: one evaluation into $OUT/NAME.json; its command goes to $OUT/commands.tsv.
run() {
  local name=$1
  shift
  local args=(eval "$BUNDLE" --manifest "$DATA/dev.jsonl" --trials "$DATA/dev_trials.txt"
    --cache "$CACHE" "$@" --scores "$OUT/$name.scores.txt" --out "$OUT/$name.json")
  echo "== $name: speakerprint ${args[*]}"
  "${SPEAKERPRINT_CMD[@]}" "${args[@]}"
  printf '%s\tspeakerprint %s\n' "$name" "${args[*]}" >> "$OUT/commands.tsv"
}

COHORT=(--cohort "$DATA/train.jsonl")
run full_raw --condition full --identification --open-set
run full_znorm --norm znorm "${COHORT[@]}"
run full_tnorm --norm tnorm "${COHORT[@]}"
run full_snorm --norm snorm "${COHORT[@]}"
run full_asnorm --norm asnorm "${COHORT[@]}"
for k in ${TOP_KS:-50 25 10}; do
  run "full_asnorm_top$k" --norm asnorm "${COHORT[@]}" --top-k "$k"
done
run crop3_raw --condition crop --crop-s 3 --identification
run multicrop5x3_raw --condition multi_crop --crop-s 3 --num-crops 5 --identification

report_args=(report "$OUT/full_raw.json" "$OUT/full_snorm.json" "$OUT/full_asnorm_top50.json"
  "$OUT/crop3_raw.json" "$OUT/multicrop5x3_raw.json"
  --name "raw cosine" --name "s-norm" --name "AS-norm top 50" --name "3 s crop"
  --name "5 x 3 s crops" --out "$SYSTEMS_REPORT"
  --title "Shipped model on the speechocean762 dev split: five ways to score")
"${SPEAKERPRINT_CMD[@]}" "${report_args[@]}"
printf 'report\tspeakerprint %s\n' "${report_args[*]}" >> "$OUT/commands.tsv"

"$PYTHON" - "$OUT" "$REPORT" "$(( $(date +%s) - start ))" "$SYSTEMS_REPORT" <<'PY'
"""Write the Markdown report from the JSON records the runs wrote; nothing is typed in."""
import json
import sys
from datetime import date
from pathlib import Path

import torch

import speakerprint
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

out, report, wall_s = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
systems_report = Path(sys.argv[4])
commands = dict(line.split("\t", 1) for line in (out / "commands.tsv").read_text().splitlines())
report_command = commands.pop("report")
runs = {name: json.loads((out / f"{name}.json").read_text()) for name in commands}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def dcf(record: dict, p_target: float) -> str:
    return next(f"{d['min_dcf']:.4f}" for d in record["min_dcf_by_p_target"] if d["p_target"] == p_target)


def condition(record: dict) -> str:
    c = record["condition"]
    if c["kind"] == "full":
        return "full length"
    if c["kind"] == "crop":
        return f"{c['crop_s']:g} s crop from the start"
    return f"mean of {c['num_crops']} x {c['crop_s']:g} s crops"


raw = runs["full_raw"]
cohort = runs["full_snorm"]["normalization"]
bundle = json.loads((Path(raw["bundle"]) / "config.json").read_text())
info = bundle.get("info", {})
recorded = info.get("dev", {})
num_speakers = raw["identification"][0]["num_speakers"]
durations = [json.loads(line)["duration_s"] for line in Path(raw["manifest"]).read_text().splitlines()]
num_embedded = sum(r["num_embedded"] for r in runs.values())
num_cached = sum(r["num_cached"] for r in runs.values())
# One standard error of an error rate p over n independent trials; trials that share utterances
# are not independent, so the real uncertainty is larger.
eer_se = (raw["eer"] * (1 - raw["eer"]) / min(raw["num_target"], raw["num_nontarget"])) ** 0.5
lines = [
    "# Evaluation of the shipped model on speechocean762's held-out speakers",
    "",
    "Written by `scripts/eval_speechocean762.sh` from the JSON each `speakerprint eval` run wrote "
    f"(under `{out}/`); nothing here is typed in.",
    "",
    f"- Model: `{raw['bundle']}`, {info.get('model_name', bundle['model']['family'])}, "
    f"{info.get('steps', '?')} training steps on {info.get('num_speakers', '?')} speakers: "
    f"{info.get('description', 'no description')}.",
    f"- Trials: `{raw['trials']}`: {raw['num_target']} target and {raw['num_nontarget']} "
    f"non-target trials over `{raw['manifest']}`, {num_speakers} speakers held out of training.",
    f"- Cohort for score normalisation: `{cohort['cohort']}`, {cohort['num_cohort_utterances']} "
    f"utterances averaged into {cohort['num_cohort_speakers']} speaker means (the training "
    f"speakers; {cohort['num_overlapping_speakers']} of them occur in the trials). "
    "Cohort embeddings use the same test condition as the trials.",
    f"- Machine: {cpu_name()}, torch {torch.__version__}, speakerprint {speakerprint.__version__}, "
    f"OMP_NUM_THREADS=1; the whole script took {wall_s // 60} min {wall_s % 60} s on {date.today()}: "
    f"{num_embedded} utterances embedded, {num_cached} embeddings read back from the one cache "
    "folder the runs share.",
    f"- Sanity check: the bundle records a dev EER of {pct(recorded['eer'])} on "
    f"{recorded['num_target'] + recorded['num_nontarget']} trials, measured by the training "
    f"loop (full length, raw cosine); this script's raw full-length EER is {pct(raw['eer'])}."
    if "eer" in recorded
    else "- The bundle records no dev EER to compare with.",
    f"- Noise: one standard error of the raw EER is at least {100 * eer_se:.2f} points "
    "(binomial, as if the trials were independent; they share utterances, so it is larger). "
    "Differences of a few tenths of a point below are within it.",
    "- minDCF is normalised (NIST SRE convention) with C_miss = C_fa = 1, at the p_target in "
    "each column.",
    "",
    "## Score normalisation (full-length embeddings)",
    "",
    "| scores | AS-norm top_k | EER | minDCF (p_target=0.01) | minDCF (p_target=0.05) | command |",
    "|---|---|---|---|---|---|",
]
notes = []
for name, record in runs.items():
    if record["condition"]["kind"] != "full":
        continue
    n = record["normalization"]
    method = {"none": "raw cosine", "asnorm": "AS-norm", "snorm": "s-norm", "znorm": "z-norm",
              "tnorm": "t-norm"}[n["method"]]
    top_k = "-" if n["top_k"] is None else str(n["top_k"])
    if n["note"]:
        top_k += " (see note)"
        notes.append(f"- {method}, top_k {n['top_k']}: {n['note']}.")
    lines.append(
        f"| {method} | {top_k} | {pct(record['eer'])} | {dcf(record, 0.01)} | "
        f"{dcf(record, 0.05)} | `{commands[name]}` |"
    )
lines += ["", *notes, ""] if notes else [""]
lines += [
    "## Test condition (raw cosine scores)",
    "",
    "| condition | EER | minDCF (p_target=0.01) | minDCF (p_target=0.05) | command |",
    "|---|---|---|---|---|",
]
for name, record in runs.items():
    if record["normalization"]["method"] == "none":
        lines.append(
            f"| {condition(record)} | {pct(record['eer'])} | {dcf(record, 0.01)} | "
            f"{dcf(record, 0.05)} | `{commands[name]}` |"
        )
lines += [
    "",
    f"Utterances no longer than the crop stay whole in both crop conditions: "
    f"{sum(d <= 3.0 for d in durations)} of the {len(durations)} trial utterances are at most "
    f"3 s long (mean length {sum(durations) / len(durations):.1f} s).",
    "",
    f"## Closed-set identification over the {num_speakers} held-out speakers",
    "",
    "Each speaker is enrolled as the mean of its utterances' unit embeddings; every utterance is "
    f"identified among the {num_speakers} means. *Inclusive*: the test utterance is part of its own "
    "speaker's mean (it votes for itself). *Leave-one-out*: it is removed from that mean; "
    "speakers with one utterance are then not tested.",
    "",
    "| condition | mode | speakers | utterances tested | speakers skipped | top-1 | top-5 | command |",
    "|---|---|---|---|---|---|---|---|",
]
for name, record in runs.items():
    for r in record["identification"]:
        lines.append(
            f"| {condition(record)} | {r['mode'].replace('_', '-')} | {r['num_speakers']} | "
            f"{r['num_tested']} | {r['num_skipped_speakers']} | {pct(r['top1_accuracy'])} | "
            f"{pct(r['top5_accuracy'])} | `{commands[name]}` |"
        )
o = raw["open_set_identification"]
lines += [
    "",
    "## Open-set identification",
    "",
    f"Half of the {num_speakers} held-out speakers are kept out of enrolment as impostors; each "
    "of the others is enrolled on the first half of its utterances (the mean of their unit "
    "embeddings) and tested on the rest, so no recording is both enrolled and tested. A test "
    "utterance is accepted as its best-scoring speaker when that cosine reaches the raw EER "
    f"threshold of the trial list ({o['threshold']:.4f}).",
    "",
    "| enrolled speakers | their test utterances | impostor utterances | correct accept | "
    "misidentified | impostors accepted | command |",
    "|---|---|---|---|---|---|---|",
    f"| {o['num_speakers']} | {o['num_known']} | {o['num_unknown']} | "
    f"{pct(o['correct_accept_rate'])} | {pct(o['misidentification_rate'])} | "
    f"{pct(o['false_accept_rate'])} | `{commands['full_raw']}` |",
    "",
    "An impostor only has to come close to one of the enrolled speakers, so the verification "
    "EER threshold lets in far more impostors in identification than its false-accept rate on "
    "single trials; `speakerprint calibrate --at fa:RATE` stores a stricter threshold.",
    "",
    "## Systems side by side",
    "",
    f"[`{systems_report}/report.md`]({systems_report.name}/report.md) (also as HTML) puts five of "
    "the runs above on one DET plot, with each one's score histograms and threshold table "
    f"(EER, false accepts at most 1% and 0.1%, minDCF thresholds): `{report_command}`.",
]
lines += ["", f"Reproduce: `OMP_NUM_THREADS=1 bash scripts/eval_speechocean762.sh`.", ""]
atomic_write_text(report, "\n".join(lines))
print(f"wrote {report}")
PY
