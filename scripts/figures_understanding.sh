#!/usr/bin/env bash
# The figures of docs/understanding.md, from the shipped model
# (src/speakerprint/pretrained/ecapa_c512_speechocean762) on the speechocean762 split of
# runs/so762/data (its 25 dev speakers were never seen in training), and from the run it came
# from (runs/so762) where that run is on this machine. Writes docs/figures/*.png and prints
# every command with what it measured, for the doc.
#   OMP_NUM_THREADS=1 bash scripts/figures_understanding.sh
#   METHOD=umap bash scripts/figures_understanding.sh   # UMAP instead of t-SNE (numba compiles
#                                                       # for a minute or so on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=src/speakerprint/pretrained/ecapa_c512_speechocean762
DATA=runs/so762/data
RUN=runs/so762
FIGURES=${FIGURES:-docs/figures}
WORK=${WORK:-runs/understanding}  # score file and embedding cache (not part of the docs)
METHOD=${METHOD:-tsne}
PYTHON=${PYTHON:-python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}  # works from a checkout without an install
if ! command -v speakerprint > /dev/null; then
  speakerprint() { "$PYTHON" -m speakerprint "$@"; }
fi
mkdir -p "$FIGURES" "$WORK"

if [ ! -f "$DATA/dev.jsonl" ]; then
  speakerprint prepare folder ../shared/data/speechocean762/train --out "$DATA" \
    --dev-speakers 25 --seed 0
fi

run() { echo "\$ $*"; "$@"; echo; }

# Per-trial scores of the dev trial list, through the embedding cache that the projection and
# enrollment figures reuse.
run speakerprint eval "$MODEL" --manifest "$DATA/dev.jsonl" --trials "$DATA/dev_trials.txt" \
  --cache "$WORK/cache" --scores "$WORK/dev_scores.txt"

run speakerprint plot scores "$WORK/dev_scores.txt" --out "$FIGURES/scores.png"
run speakerprint plot projection "$MODEL" --manifest "$DATA/dev.jsonl" \
  --manifest "$DATA/train.jsonl" --seen-manifest "$DATA/train.jsonl" --method "$METHOD" \
  --max-speakers 8 --max-per-speaker 15 --cache "$WORK/cache" --out "$FIGURES/projection.png"
audio=$("$PYTHON" -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['path'])" \
  "$DATA/dev.jsonl")
run speakerprint plot attention "$MODEL" "$audio" --out "$FIGURES/attention.png"
if compgen -G "$RUN/checkpoints/step_*" > /dev/null; then
  run speakerprint plot class-weights "$RUN" --out "$FIGURES/class_weights.png"
else
  echo "no checkpoints in $RUN: class-weights skipped (train it with the command under 'A real result' in docs/results.md)"
fi
run speakerprint plot aam-scale --out "$FIGURES/aam_scale.png"
run speakerprint plot enrollment-bias "$MODEL" --manifest "$DATA/dev.jsonl" \
  --cache "$WORK/cache" --out "$FIGURES/enrollment_bias.png"
run speakerprint plot dimension --out "$FIGURES/dimension.png"
run speakerprint plot curves "$MODEL/training_metrics.jsonl" --out "$FIGURES/curves.png"
"$PYTHON" -c "from speakerprint.utils.machine import cpu_name; import torch; \
print(f'machine: {cpu_name()}, torch {torch.__version__}, CPU')"
