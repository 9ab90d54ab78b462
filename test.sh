#!/usr/bin/env bash
# Run the whole napari-gsm test suite headless (Xvfb), from a fresh Debian bookworm machine
# with only Python 3 (+ pip/venv):  bash test.sh [pytest args...]
#   1. installs the Debian libraries napari/Qt need (plus Xvfb), only those that are missing;
#   2. creates .venv and `pip install -e '.[test]'` (re-run only when pyproject.toml changed);
#   3. runs pytest under Xvfb (pytest-xvfb) and exits with pytest's exit code
#      (5, "no tests collected", is a failure too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

LOG_TAG=test.sh
source scripts/env.sh
ensure_debs xvfb xauth "${QT_DEB_PACKAGES[@]}"
ensure_venv test

# Headless: pytest-xvfb starts a virtual X server; offscreen Qt cannot render Image layers.
unset QT_QPA_PLATFORM
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
"$VENV/bin/python" -m pytest --xvfb-backend xvfb "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
# pytest's last line: "== 3 passed, 1 warning in 2.1s ==" (or without the '=' with -q).
summary=$(grep -E ' in [0-9]+(\.[0-9]+)?s( \([0-9:.]+\))?( =+)?$' "$LOG" | tail -n 1 || true)
echo "[test.sh] pytest summary: ${summary:-<none>}"
if [ "$rc" -eq 5 ]; then echo "[test.sh] FAIL: no tests collected (pytest exit 5)"; fi
echo "[test.sh] exit code $rc"
exit "$rc"
