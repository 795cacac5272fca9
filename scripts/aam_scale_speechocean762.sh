#!/usr/bin/env bash
# The AAM-softmax scale s in practice: short runs of the demo recipe (recipes/demo.yaml, a small
# ECAPA-TDNN C=256) on the speechocean762 split (100 training speakers, 25 dev speakers) with
# s = 1, 16 and 30, then one figure of their final training loss and dev EER against s, beside
# the lowest loss each s allows (speakerprint.viz.aam_scale), and the class-weight matrices of
# each run. Re-running resumes unfinished runs and skips finished ones; the figures are redrawn.
#   STEPS=200 THREADS=1 bash scripts/aam_scale_speechocean762.sh
#   SCALES="1 30" bash scripts/aam_scale_speechocean762.sh
#   SCALES=" " bash scripts/aam_scale_speechocean762.sh   # no training: only redraw the figures
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/aam_scale_so762}
DATA=runs/so762/data
FIGURES=${FIGURES:-docs/figures}
STEPS=${STEPS:-200}
THREADS=${THREADS:-0}  # torch CPU threads (0: torch's default)
ALL_SCALES="1 16 30"
SCALES=${SCALES:-$ALL_SCALES}

if [ ! -f "$DATA/train.jsonl" ]; then
  speakerprint prepare folder ../shared/data/speechocean762/train --out "$DATA" \
    --dev-speakers 25 --seed 0
fi

for s in $SCALES; do
  dir=$OUT/s$s
  if [ -f "$dir/bundle/config.json" ]; then
    echo "== s=$s: done already ($dir/bundle)"
    continue
  fi
  resume=()
  if compgen -G "$dir/checkpoints/step_*" > /dev/null; then resume=(--resume); fi
  echo "== s=$s"
  # Checkpoints every STEPS/4 steps, all kept, so that class-weights shows the head over time.
  speakerprint train recipes/demo.yaml --out "$dir" --no-progress "${resume[@]}" \
    --set loss.scale="$s" \
    --set data.train_manifest=$DATA/train.jsonl \
    --set data.dev_manifest=$DATA/dev.jsonl \
    --set data.dev_trials=$DATA/dev_trials.txt \
    --set "data.description=speechocean762 train split, 100 speakers (aam-scale study, s=$s)" \
    --set train.max_steps="$STEPS" \
    --set train.checkpoint_every=$(( STEPS / 4 > 0 ? STEPS / 4 : 1 )) \
    --set train.keep_checkpoints=5 \
    --set train.eval_at_start=false \
    --set train.num_threads="$THREADS"
done

runs=()
for s in $ALL_SCALES; do
  if [ -f "$OUT/s$s/metrics.jsonl" ] && compgen -G "$OUT/s$s/checkpoints/step_*" > /dev/null; then
    runs+=(--run "$OUT/s$s")
    speakerprint plot class-weights "$OUT/s$s" --out "$FIGURES/aam_scale_class_weights_s$s.png"
  fi
done
speakerprint plot aam-scale --num-classes 100 --num-classes 5994 "${runs[@]}" \
  --out "$FIGURES/aam_scale_runs.png"
