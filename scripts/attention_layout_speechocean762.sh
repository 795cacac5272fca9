#!/usr/bin/env bash
# Does the BatchNorm before the attention's tanh (SpeechBrain/NeMo layout, now the default) make
# ECAPA-TDNN's attentive pooling attend? Retrains the shipped model's recipe with the default
# layout and compares it with the shipped bundle (WeSpeaker layout: no BN there) on the dev EER
# and on how the attention weights vary over time. Writes
# docs/results/attention_layout_speechocean762.md. About 25 min on one CPU thread.
#   bash scripts/attention_layout_speechocean762.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/so762_bn}
SHIPPED=src/speakerprint/pretrained/ecapa_c512_speechocean762
OUT=docs/results/attention_layout_speechocean762.md
DATA=runs/so762/data

if [ ! -f "$DATA/train.jsonl" ]; then
  speakerprint prepare folder ../shared/data/speechocean762/train --out "$DATA" \
    --dev-speakers 25 --seed 0
fi
if [ ! -f "$RUN/bundle/config.json" ]; then
  resume=()
  if compgen -G "$RUN/checkpoints/step_*" > /dev/null; then resume=(--resume); fi
  speakerprint train recipes/ecapa_c512_speechocean762.yaml --out "$RUN" --no-progress \
    "${resume[@]}" --set train.num_threads=1
fi

FILES="SPEAKER0001/000010011.opus SPEAKER0005/000050003.opus SPEAKER0036/000360013.opus"  # first recording of the first three dev speakers
tmp=$(mktemp -d)
{
  echo "# Attention with and without the BatchNorm before its tanh (ECAPA-TDNN C=512, speechocean762)"
  echo
  echo "Both trained by \`recipes/ecapa_c512_speechocean762.yaml\` (400 steps, 100 speakers); dev:"
  echo "10,400 trials of the 25 held-out speakers. Attention: \`speakerprint plot attention\` on three"
  echo "recordings; peak/uniform is the median over channels of T x max alpha (1: uniform over time)."
  echo
  echo "| model | layout | dev EER | minDCF (0.01) | recording | mean pairwise cosine of channels | median peak/uniform |"
  echo "|---|---|---:|---:|---|---:|---:|"
  for bundle in "$SHIPPED" "$RUN/bundle"; do
    read -r layout eer dcf < <(python - "$bundle" <<'PY'
import json, sys
c = json.load(open(f"{sys.argv[1]}/config.json"))
a, dev = c["model"]["args"], c["info"]["dev"]
layout = "attention BN, MFA BN" if a.get("attention_norm", True) else "no BN (WeSpeaker)"
print(layout.replace(" ", "_"), f"{100 * dev['eer']:.2f}%", f"{dev['min_dcf']:.3f}")
PY
)
    for f in $FILES; do
      line=$(speakerprint plot attention "$bundle" "../shared/data/speechocean762/train/$f" \
        --out "$tmp/a.png" | grep "channel attention similarity")
      cos=$(echo "$line" | sed -E 's/.*cosine ([0-9.-]+),.*/\1/')
      peak=$(echo "$line" | sed -E 's/.*peak\/uniform ([0-9.]+).*/\1/')
      echo "| $bundle | ${layout//_/ } | $eer | $dcf | $f | $cos | $peak |"
    done
  done
  echo
  echo "Machine: $(python -c 'from speakerprint.utils.machine import cpu_name; print(cpu_name())'), CPU."
  echo "Re-run: \`bash scripts/attention_layout_speechocean762.sh\`"
} > "$tmp/out.md"
mv "$tmp/out.md" "$OUT"
rm -rf "$tmp"
cat "$OUT"
