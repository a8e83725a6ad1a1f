#!/usr/bin/env bash
# Regenerates the screenshots in docs/images/ that docs/status-page.md shows: runs the
# status page test in a real headless Chromium (Debian `chromium`), which copies the
# screenshots it takes into $LIFELINE_SCREENSHOTS.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "install the Debian package chromium" >&2; exit 1; }
out="$PWD/docs/images"
mkdir -p "$out"
LIFELINE_SCREENSHOTS="$out" cargo test --test tests -- \
  status_page::history::status_page_with_history_matches_the_api_in_chromium --exact
ls -l "$out"/status-page-*.png
