#!/usr/bin/env bash
# The figures of docs/understanding.md that compare the zoo's models (issue 7): the same
# utterances projected by each model side by side, and TitaNet-S's attention over time. Needs
# the runs of scripts/zoo_speechocean762.sh (runs/zoo_so762/*/bundle); prints every command with
# what it measured.
#   OMP_NUM_THREADS=1 bash scripts/figures_zoo.sh
#   METHOD=umap bash scripts/figures_zoo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-runs/zoo_so762}
DATA=runs/so762/data
FIGURES=${FIGURES:-docs/figures}
WORK=${WORK:-runs/understanding}
METHOD=${METHOD:-tsne}
PYTHON=${PYTHON:-python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
if ! command -v speakerprint > /dev/null; then
  speakerprint() { "$PYTHON" -m speakerprint "$@"; }
fi
mkdir -p "$FIGURES" "$WORK"
run() { echo "\$ $*"; "$@"; echo; }

bundles=()
for name in ecapa_c512 titanet_s_aam resnet34 deep_speaker_small; do
  if [ -f "$ZOO/$name/bundle/config.json" ]; then
    bundles+=("$ZOO/$name/bundle")
  else
    echo "no $ZOO/$name/bundle: left out (scripts/zoo_speechocean762.sh trains it)"
  fi
done
if [ "${#bundles[@]}" -eq 0 ]; then
  echo "no zoo bundles in $ZOO: run scripts/zoo_speechocean762.sh first" >&2
  exit 1
fi
run speakerprint plot projection "${bundles[@]}" --manifest "$DATA/dev.jsonl" \
  --manifest "$DATA/train.jsonl" --seen-manifest "$DATA/train.jsonl" --method "$METHOD" \
  --max-speakers 8 --max-per-speaker 15 --cache "$WORK/zoo_cache" \
  --out "$FIGURES/projection_zoo.png"
if [ -f "$ZOO/titanet_s_aam/bundle/config.json" ]; then
  audio=$("$PYTHON" -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['path'])" \
    "$DATA/dev.jsonl")
  run speakerprint plot attention "$ZOO/titanet_s_aam/bundle" "$audio" \
    --out "$FIGURES/attention_titanet_s.png"
fi
"$PYTHON" -c "from speakerprint.utils.machine import cpu_name; import torch; \
print(f'machine: {cpu_name()}, torch {torch.__version__}, CPU')"
