#!/usr/bin/env bash
# Install the pinned JavaScript the book serves itself (package.json / package-lock.json) from the npm
# registry and lay the files the HTML needs under _extra/vendor/, which Sphinx copies to _build/html/vendor/
# (html_extra_path). Nothing here is committed: a fresh clone runs this once (make assets).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=_extra/vendor/.installed-from
want=$( { cat package.json; cat package-lock.json 2>/dev/null || true; } | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
else
  npm install --no-audit --no-fund --ignore-scripts --loglevel=error
fi
rm -rf _extra/vendor
mkdir -p _extra/vendor/mathjax _extra/vendor/html-manager _extra/vendor/requirejs
# MathJax 3: the combined TeX+MathML CHTML component plus what it loads on demand (TeX extensions, fonts).
cp node_modules/mathjax/es5/tex-mml-chtml.js _extra/vendor/mathjax/
mkdir -p _extra/vendor/mathjax/input/tex _extra/vendor/mathjax/output/chtml/fonts
cp -r node_modules/mathjax/es5/input/tex/extensions _extra/vendor/mathjax/input/tex/
cp -r node_modules/mathjax/es5/output/chtml/fonts/woff-v2 _extra/vendor/mathjax/output/chtml/fonts/
cp -r node_modules/mathjax/es5/a11y node_modules/mathjax/es5/ui _extra/vendor/mathjax/
# Widget manager (AMD build, needs RequireJS) and the icon fonts it references next to itself.
find node_modules/@jupyter-widgets/html-manager/dist -maxdepth 1 -type f \
  \( -name 'embed-amd.js' -o -name '*.woff*' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
  -exec cp {} _extra/vendor/html-manager/ \;
cp node_modules/requirejs/require.js _extra/vendor/requirejs/
echo "$want" > "$stamp"
echo "vendored assets into _extra/vendor ($(du -sh _extra/vendor | cut -f1))"
