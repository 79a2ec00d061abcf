#!/usr/bin/env bash
# Render built pages in headless Chromium with no network and report what a reader would see:
# typeset math (mjx-container), TeX errors (mjx-merror), rendered widgets (widget-slider / widget-output).
# Usage: tools/render_check.sh _build/html/chapters/forward_stability.html [more pages...]
# Needs Debian's chromium (apt-get install chromium); not part of `make test`.
set -euo pipefail
for page in "$@"; do
  tmp=$(mktemp -d)
  dom=$(chromium --headless --no-sandbox --disable-gpu --disable-quic --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --user-data-dir="$tmp" \
        --virtual-time-budget=10000 --dump-dom "file://$(realpath "$page")" 2>/dev/null)
  rm -rf "$tmp"
  printf '%s: math=%s tex_errors=%s sliders=%s widget_outputs=%s images=%s\n' "$page" \
    "$(grep -o '<mjx-container' <<<"$dom" | wc -l)" "$(grep -o '<mjx-merror' <<<"$dom" | wc -l)" \
    "$(grep -o 'widget-slider' <<<"$dom" | wc -l)" "$(grep -o 'widget-output' <<<"$dom" | wc -l)" \
    "$(grep -o '<img' <<<"$dom" | wc -l)"
done
