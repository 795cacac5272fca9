#!/usr/bin/env bash
# Score fusion of two systems on real speech (issue 5): the zoo's ECAPA-TDNN C=512 and TitaNet-S
# (scripts/zoo_speechocean762.sh trains both on the same 100 speechocean762 speakers) scored on
# the 25 dev speakers. The dev trials are cut in two halves by enrolment speaker; the fusion
# weights are fitted on one half and applied to the other, both ways round, so no fused figure
# is measured on the trials its weights were fitted on. Writes docs/results/fusion_speechocean762.md.
#   OMP_NUM_THREADS=1 bash scripts/fusion_speechocean762.sh
#   SYSTEMS="runs/a/bundle runs/b/bundle" NAMES="a b" bash scripts/fusion_speechocean762.sh
set -euo pipefail
cd "$(dirname "$0")/.."
read -ra SPEAKERPRINT_CMD <<< "${SPEAKERPRINT:-speakerprint}"
PYTHON=${PYTHON:-python}
if [ "${SPEAKERPRINT_CMD[1]:-}" = "-m" ]; then PYTHON=${SPEAKERPRINT_CMD[0]}; fi
ZOO=${ZOO:-runs/zoo_so762}
read -ra SYSTEMS <<< "${SYSTEMS:-$ZOO/ecapa_c512/bundle $ZOO/titanet_s_aam/bundle}"
read -ra NAMES <<< "${NAMES:-ecapa_c512 titanet_s}"
DATA=${DATA:-runs/so762/data}
OUT=${OUT:-runs/fusion_so762}
REPORT=${REPORT:-docs/results/fusion_speechocean762.md}
mkdir -p "$OUT"

# Two halves of the trial list, by enrolment speaker (the first half of the sorted speakers).
"$PYTHON" - "$DATA/dev_trials.txt" "$OUT" <<'EOF'
import sys
from pathlib import Path

lines = Path(sys.argv[1]).read_text().splitlines()
speakers = sorted({line.split()[1].split("/")[0] for line in lines})
first = set(speakers[: len(speakers) // 2])
halves = {"a": [], "b": []}
for line in lines:
    halves["a" if line.split()[1].split("/")[0] in first else "b"].append(line)
for name, kept in halves.items():
    Path(sys.argv[2], f"trials_{name}.txt").write_text("\n".join(kept) + "\n")
    print(f"half {name}: {len(kept)} trials")
EOF

for i in "${!SYSTEMS[@]}"; do
  for half in a b; do
    "${SPEAKERPRINT_CMD[@]}" eval "${SYSTEMS[$i]}" --manifest "$DATA/dev.jsonl" \
      --trials "$OUT/trials_$half.txt" --cache "$OUT/cache_${NAMES[$i]}" \
      --scores "$OUT/${NAMES[$i]}_$half.scores.txt" --out "$OUT/${NAMES[$i]}_$half.json" > /dev/null
  done
done

for fit in a b; do
  apply=$([ "$fit" = a ] && echo b || echo a)
  dev=() eval_=()
  for name in "${NAMES[@]}"; do
    dev+=(--dev "$OUT/${name}_$fit.scores.txt")
    eval_+=(--eval "$OUT/${name}_$apply.scores.txt")
  done
  "${SPEAKERPRINT_CMD[@]}" fuse "${dev[@]}" "${eval_[@]}" --out "$OUT/fused_fit${fit}_on${apply}.scores.txt"
done

"$PYTHON" - "$OUT" "$REPORT" "${SYSTEMS[*]}" "${NAMES[*]}" <<'EOF'
import json
import platform
import sys
from pathlib import Path

import torch

from speakerprint.utils.machine import cpu_name

out, report = Path(sys.argv[1]), Path(sys.argv[2])
systems, names = sys.argv[3].split(), sys.argv[4].split()
rows = []
enrol = {
    h: len({line.split()[1].split("/")[0] for line in (out / f"trials_{h}.txt").open()})
    for h in "ab"
}
for fit, applied in (("a", "b"), ("b", "a")):
    record = json.loads((out / f"fused_fit{fit}_on{applied}.scores.fusion.json").read_text())
    trials = sum(1 for _ in (out / f"trials_{applied}.txt").open())
    figures = [*record["systems"].values(), record["fused"]]
    weights = ", ".join(f"{w:+.2f}" for w in record["fusion"]["weights"])
    rows.append(
        f"| {fit} | {applied} ({trials}) | "
        + " | ".join(f"{100 * f['eer']:.2f} / {f['min_dcf_0.01']:.3f}" for f in figures)
        + f" | {weights}, {record['fusion']['offset']:+.2f} |"
    )
head = " | ".join(f"{n} EER % / minDCF" for n in names)
lines = [
    "# Score fusion of two systems on speechocean762",
    "",
    f"| fitted on half | applied to half (trials) | {head} | fused EER % / minDCF | weights, offset |",
    "|---|---|" + "---:|" * (len(names) + 1) + "---|",
    *rows,
    "",
    f"The dev speakers' trials are cut in two halves by enrolment speaker (a: the first "
    f"{enrol['a']} in sorted order, b: the other {enrol['b']}). Fusion weights are fitted by prior-weighted logistic "
    "regression (p_target 0.01) on one half's scores and applied to the other half, so each fused "
    "figure is measured on trials its weights never saw. minDCF at p_target 0.01. The fused "
    "scores are log-likelihood ratios; the single systems' are raw cosines (EER and minDCF do not "
    "depend on the scale).",
    "",
    "Systems: " + ", ".join(f"{n} = `{s}`" for n, s in zip(names, systems)) + ".",
    "",
    f"Machine: {cpu_name()}, {platform.system()} "
    f"{platform.machine()}, torch {torch.__version__}, Python {platform.python_version()}.",
    "",
    "Re-run: `OMP_NUM_THREADS=1 bash scripts/fusion_speechocean762.sh` (after "
    "`scripts/zoo_speechocean762.sh`).",
]
report.write_text("\n".join(lines) + "\n")
print(f"wrote {report}")
EOF
