#!/usr/bin/env bash
# Assemble the demo model's training corpus from Debian packages of public-domain or freely
# licensed English text (licences: models/demo/tandem-demo-moe/README.md), as plain text:
#   build/demo-corpus/{train,valid}.jsonl   one document a line: {"source", "id", "text"}
# Deterministic: the same package versions give byte-identical files. Needs root for apt-get.
#   tools/make_demo_corpus.sh [out_dir=build/demo-corpus]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/demo-corpus}

packages=(bible-kjv bible-kjv-text dict-gcide dict-devil dict-foldoc jargon-text)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

mkdir -p "$out"
# The whole King James Version, unformatted (one verse a line), through the package's reader.
bible -l0 "Gen1:1-Rev22:21" > "$out/kjv.txt"
python3 tools/demo_corpus.py --kjv "$out/kjv.txt" --out "$out"
rm "$out/kjv.txt"
# The package versions the corpus came from, for the model's README.
dpkg-query -W "${packages[@]}" > "$out/packages.txt"
sha256sum "$out"/train.jsonl "$out"/valid.jsonl
