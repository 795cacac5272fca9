#!/usr/bin/env bash
# Dev EER with and without augmentation at the same training budget (issue 4): ECAPA-TDNN C=512
# on the speechocean762 split, the zoo's recipe (recipes/zoo_speechocean762.yaml, 200 steps of
# 32 x 2 s), three runs that differ only in augment.*:
#   none                 no augmentation (the zoo's ecapa_c512 run)
#   noise_reverb_specaug additive noise/babble 0.6, reverberation 0.3, SpecAugment 0.6
#   with_speed           the same plus speed perturbation 0.9/1.0/1.1 (3x the classes)
# MUSAN and RIRS_NOISES are not on these machines: the noise folder is generated noise plus
# babble from FSDD talkers (scripts/make_aug_banks.py, MUSAN layout), and the RIRs are 200 rooms
# simulated by pyroomacoustics (pip install 'speakerprint[sim]'), cached under $BANKS/rirs ($BANKS defaults to $OUT).
# Every finished run is then also scored on two degraded copies of dev (scripts/degrade_dev.py:
# generated noise at 5 dB SNR with new realisations, and 50 new simulated rooms, RT60 0.4-1.0 s).
# Re-running resumes unfinished runs and skips finished ones; the table is rewritten each time.
#   THREADS=1 bash scripts/augment_speechocean762.sh
#   RUNS=with_speed THREADS=1 bash scripts/augment_speechocean762.sh   # one run, then the table
# A longer budget, in its own folder and table, with the same noise banks and rooms:
#   STEPS=600 OUT=runs/aug_so762_600 BANKS=runs/aug_so762 ALL_RUNS="none noise_reverb_specaug" \
#     RESULTS=docs/results/augment_speechocean762_600.md THREADS=1 bash scripts/augment_speechocean762.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-runs/aug_so762}
BANKS=${BANKS:-$OUT}  # noise folder, RIR cache and degraded dev copies
RESULTS=${RESULTS:-docs/results/augment_speechocean762.md}
DATA=runs/so762/data
STEPS=${STEPS:-200}
THREADS=${THREADS:-0}
ALL_RUNS=${ALL_RUNS:-none noise_reverb_specaug with_speed}
RUNS=${RUNS:-$ALL_RUNS}

if [ ! -f "$DATA/train.jsonl" ]; then
  speakerprint prepare folder ../shared/data/speechocean762/train --out "$DATA" \
    --dev-speakers 25 --seed 0
fi
if [ ! -d "$BANKS/musan" ]; then
  python scripts/make_aug_banks.py "$BANKS/musan.tmp" && mv "$BANKS/musan.tmp" "$BANKS/musan"
fi

augment=(--set augment.noise_dir="$BANKS/musan" --set augment.noise_prob=0.6
         --set augment.simulate_rooms=200 --set augment.rir_cache_dir="$BANKS/rirs"
         --set augment.reverb_prob=0.3 --set augment.specaugment_prob=0.6)
for run in $RUNS; do
  case $run in
    none) args=() ;;
    noise_reverb_specaug) args=("${augment[@]}") ;;
    with_speed) args=("${augment[@]}" --set augment.speed_perturb=true) ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  dir=$OUT/$run
  if [ -f "$dir/bundle/config.json" ]; then
    echo "== $run: done already ($dir/bundle)"
    continue
  fi
  resume=()
  if compgen -G "$dir/checkpoints/step_*" > /dev/null; then resume=(--resume); fi
  echo "== $run"
  speakerprint train recipes/zoo_speechocean762.yaml --out "$dir" --no-progress "${resume[@]}" \
    --set model.name=ecapa_tdnn_c512 "${args[@]}" \
    --set train.max_steps="$STEPS" --set train.num_threads="$THREADS"
done

epochs=$(python -c "print(round($STEPS * 32 / 2126, 1))")
command="THREADS=$THREADS bash scripts/augment_speechocean762.sh"
if [ "$STEPS" != 200 ]; then
  command="STEPS=$STEPS OUT=$OUT BANKS=$BANKS ALL_RUNS=\"$ALL_RUNS\" RESULTS=$RESULTS $command"
fi
python scripts/results_table.py "$OUT" --title "Augmentation on speechocean762, same budget ($STEPS steps)" \
  --command "$command" \
  --expect $ALL_RUNS --augment-column \
  --note "ECAPA-TDNN C=512, the zoo's recipe (Adam 2e-3 cosine, AAM m=0.2 s=30) at $STEPS steps of \
32 x 2 s crops, about $epochs epochs of the 2,126 training utterances; only augment.* differs. \
Noise: generated noise (white, pink, brown, blue, hum, fan, bursts) and babble of 3-7 FSDD \
talkers, through the MUSAN folder reader (scripts/make_aug_banks.py); no music. Reverberation: \
200 rooms simulated with pyroomacoustics (RT60 0.2-0.8 s). Dev is clean speech." \
  --out "$RESULTS"

# Robustness: the same trials on the degraded copies of dev.
[ -f "$BANKS/dev_noise5/dev.jsonl" ] || python scripts/degrade_dev.py "$DATA/dev.jsonl" \
  --condition noise --snr-db 5 --out "$BANKS/dev_noise5"
[ -f "$BANKS/dev_reverb/dev.jsonl" ] || python scripts/degrade_dev.py "$DATA/dev.jsonl" \
  --condition reverb --out "$BANKS/dev_reverb" --rir-cache "$BANKS/rirs"
for run in $ALL_RUNS; do
  [ -f "$OUT/$run/bundle/config.json" ] || continue
  for cond in noise5 reverb; do
    [ -f "$OUT/$run/eval_$cond.json" ] || speakerprint eval "$OUT/$run/bundle" \
      --manifest "$BANKS/dev_$cond/dev.jsonl" --trials "$DATA/dev_trials.txt" \
      --out "$OUT/$run/eval_$cond.json" > /dev/null
  done
done
python - "$OUT" "$RESULTS" $ALL_RUNS <<'PY'
import json, sys
from pathlib import Path
from speakerprint.utils.io import atomic_write_text
out, table, runs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
lines = ["", "## The same models on degraded dev", "",
         "| run | clean dev EER % | 5 dB noise EER % | reverberant EER % | minDCF clean / noise / reverb |",
         "|---|---:|---:|---:|---|"]
for run in runs:
    records = out / run / "metrics.jsonl"
    if not all((out / run / f"eval_{c}.json").is_file() for c in ("noise5", "reverb")):
        continue
    clean = [json.loads(x) for x in records.read_text().splitlines() if '"dev"' in x][-1]
    noise, reverb = (json.loads((out / run / f"eval_{c}.json").read_text()) for c in ("noise5", "reverb"))
    lines.append(f"| {run} | {100 * clean['eer']:.2f} | {100 * noise['eer']:.2f} | {100 * reverb['eer']:.2f} "
                 f"| {clean['min_dcf']:.3f} / {noise['min_dcf']:.3f} / {reverb['min_dcf']:.3f} |")
lines += ["", "Degraded copies of the 520 dev utterances, the same 10,400 trials "
          "(scripts/degrade_dev.py): generated noise of the training kinds but new realisations "
          "(seed 1; training drew seed 0) at 5 dB SNR; 50 rooms simulated with another seed than "
          "training's, RT60 0.4-1.0 s. Full-length embeddings, cosine scoring."]
atomic_write_text(table, table.read_text() + "\n".join(lines) + "\n")
PY
