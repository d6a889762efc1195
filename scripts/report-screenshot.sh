#!/usr/bin/env bash
# Screenshot a run's report.html in headless Chromium: scripts/report-screenshot.sh RUN_DIR OUT.png [WIDTH,HEIGHT]
# (docs/report.png, the README's picture of the first screen, was made this way from runs/demo at 1280,720.)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 RUN_DIR OUT.png [WIDTH,HEIGHT]" >&2
  exit 2
fi
report="$(cd "$1" && pwd)/report.html"
[ -f "$report" ] || { echo "$report does not exist; run \`paramreuse report $1\` first" >&2; exit 2; }
chromium="${PARAMREUSE_CHROMIUM:-chromium}"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --virtual-time-budget=5000 --window-size="${3:-1100,1900}" --screenshot="$2" "file://$report" 2>/dev/null
# A 256-colour palette keeps the picture small enough for the README (about a third of the bytes).
python="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
if [ -x "$python" ]; then
  "$python" -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").quantize(256).save(sys.argv[1], optimize=True)' "$2"
fi
echo "$2"
