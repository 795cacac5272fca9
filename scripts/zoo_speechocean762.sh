#!/usr/bin/env bash
# Same-budget comparison of the model zoo on speechocean762 (issue 3): ECAPA-TDNN C=512,
# TitaNet-S with AAM-softmax and with cross-entropy, ResNet34 and Deep Speaker (the ~100k
# variant the paper's authors suggest for small corpora), all from recipes/zoo_speechocean762.yaml.
# Re-running resumes unfinished runs and skips finished ones; the table is rewritten each time.
#   STEPS=200 THREADS=1 bash scripts/zoo_speechocean762.sh
#   RUNS=resnet34 bash scripts/zoo_speechocean762.sh   # one run, then the whole table again
#   RUNS=" " bash scripts/zoo_speechocean762.sh        # no training: only rewrite the table
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}  # scripts/results_table.py imports speakerprint
OUT=${OUT:-runs/zoo_so762}
DATA=runs/so762/data
STEPS=${STEPS:-200}
THREADS=${THREADS:-0}  # torch CPU threads (0: torch's default)
ALL_RUNS="deep_speaker_small titanet_s_aam titanet_s_softmax ecapa_c512 resnet34"
RUNS=${RUNS:-$ALL_RUNS}

if [ ! -f "$DATA/train.jsonl" ]; then
  speakerprint prepare folder ../shared/data/speechocean762/train --out "$DATA" \
    --dev-speakers 25 --seed 0
fi

for run in $RUNS; do
  case $run in
    ecapa_c512) args=(--set model.name=ecapa_tdnn_c512) ;;
    titanet_s_aam) args=(--set model.name=titanet_s) ;;
    titanet_s_softmax) args=(--set model.name=titanet_s --set loss.name=softmax) ;;
    resnet34) args=(--set model.name=resnet34) ;;
    deep_speaker_small) args=(--set model.name=deep_speaker_small --set features.num_mel_bins=64) ;;
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
    "${args[@]}" --set train.max_steps="$STEPS" --set train.num_threads="$THREADS"
done

python scripts/results_table.py "$OUT" --title "Same-budget model zoo on speechocean762" \
  --command "STEPS=$STEPS THREADS=$THREADS bash scripts/zoo_speechocean762.sh" \
  --expect $ALL_RUNS --keep-missing \
  --note "train min is wall time as it happened, often with other jobs sharing the CPU: not a \
speed comparison (bench/ is for that). The same recipe for every model: Adam 2e-3 with cosine \
decay, AAM m=0.2 s=30 with a 60-step margin warm-up (or plain softmax), no augmentation." \
  --out docs/results/zoo_speechocean762.md
