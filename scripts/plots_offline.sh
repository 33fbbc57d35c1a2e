#!/usr/bin/env bash
# `dvc plots show` for a machine without internet: DVC's HTML loads vega from a CDN, so this installs vega,
# vega-lite and vega-embed from the npm registry once (into .cache/vega) and points the page at local copies.
# Usage: bash scripts/plots_offline.sh [OUT_DIR]   (default dvc_plots; open OUT_DIR/index.html)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dvc_plots}
vega=.cache/vega/node_modules
if [ ! -f "$vega/vega-embed/build/vega-embed.min.js" ]; then
  mkdir -p .cache/vega
  (cd .cache/vega && npm install --silent --no-audit --no-fund vega@5 vega-lite@5 vega-embed@6)
fi
.venv/bin/dvc plots show -o "$out" >/dev/null
mkdir -p "$out/static"
cp "$vega/vega/build/vega.min.js" "$vega/vega-lite/build/vega-lite.min.js" \
   "$vega/vega-embed/build/vega-embed.min.js" "$out/static/"
sed -i -E 's#https://cdn.jsdelivr.net/npm/(vega(-lite|-embed)?)@[0-9.]+#static/\1.min.js#' "$out/index.html"
echo "$out/index.html"
