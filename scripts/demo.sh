#!/usr/bin/env bash
# The main job on the data that ships with the repo: prepare, train, evaluate, verify.
# Runs on 2 CPU cores in a few minutes; every step is a plain `speakerprint` command.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/demo
DATA=data/demo/speechocean762
rm -rf "$RUN"

echo "== 1. prepare: manifests and a speaker-disjoint dev trial list"
speakerprint prepare folder "$DATA" --out "$RUN/data" --dev-speakers 10 --seed 0

echo "== 2. train a small ECAPA-TDNN (dev EER before and after is printed)"
# A progress bar on a terminal; written to a log or a pipe, one update every 10 s, not ten a second.
[ -t 2 ] || export TQDM_MININTERVAL=10
speakerprint train recipes/demo.yaml --out "$RUN"

echo "== 3. evaluate the trained bundle on the 10 held-out speakers"
speakerprint eval "$RUN/bundle" --manifest "$RUN/data/dev.jsonl" --trials "$RUN/data/dev_trials.txt" \
  --out "$RUN/eval.json"

echo "== 4. verify a same-speaker and a different-speaker pair (held-out speakers)"
# The two longest recordings of the first held-out speaker, and the longest of another one:
# longer recordings give steadier embeddings. The pairs are chosen by length, never by score.
read -r SAME_A SAME_B DIFF_B < <(python - "$RUN/data/dev.jsonl" <<'PY'
import json, sys
utts = [json.loads(line) for line in open(sys.argv[1])]
speakers = sorted({u["speaker"] for u in utts})
def longest(speaker):
    return sorted((u for u in utts if u["speaker"] == speaker), key=lambda u: -u["duration_s"])
a, b = longest(speakers[0])[:2]
other = longest(speakers[1])[0]
print(a["path"], b["path"], other["path"])
PY
)
echo "-- same speaker:"
speakerprint verify --model "$RUN/bundle" "$SAME_A" "$SAME_B"
echo "-- different speakers:"
speakerprint verify --model "$RUN/bundle" "$SAME_A" "$DIFF_B"
