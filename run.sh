#!/usr/bin/env bash
# The main job:  bash run.sh [demo options...]
# Sets up .venv (`pip install -e '.[napari]'`, plus the Debian libraries Qt needs) if needed,
# then runs `napari-gsm demo`: trains on sample_data/, fits, writes .pts + overlay PNGs to
# out/demo/, prints a summary, and opens napari with the widgets when a display exists.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

LOG_TAG=run.sh
source scripts/env.sh
ensure_debs "${QT_DEB_PACKAGES[@]}"
ensure_venv napari test  # an install made by test.sh ('.[test]') includes '.[napari]'

exec "$VENV/bin/napari-gsm" demo "$@"
