#!/usr/bin/env bash
# Run the whole napari-gsm test suite headless (Xvfb), from a fresh Debian bookworm machine
# with only Python 3 (+ pip/venv):  bash test.sh [pytest args...]
#   1. installs the Debian libraries napari/Qt need (plus Xvfb), only those that are missing;
#   2. creates .venv and `pip install -e '.[test]'` (re-run only when pyproject.toml changed);
#   3. runs pytest under Xvfb (pytest-xvfb) and exits with pytest's exit code
#      (5, "no tests collected", is a failure too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv
# From docs/napari-env.md: what a minimal bookworm needs to import napari and render under Xvfb.
QT_DEB_PACKAGES=(xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-render-util0 libxcb-render0 libxcb-shape0 libxcb-util1 libxcb-xkb1)
DEB_PACKAGES=(xvfb "${QT_DEB_PACKAGES[@]}")

log() { printf '[test.sh] %s\n' "$*" >&2; }

ensure_debs() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = 'install ok installed' ] || missing+=("$p")
  done
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return 0
  local SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
      log "missing Debian packages (${missing[*]}) and not root/no sudo: install them and re-run"; exit 1
    fi
  fi
  log "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_venv() {  # $1 = extras, e.g. test
  local extras=$1 stamp="$VENV/.napari-gsm-install-stamp" want
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  want="$extras $(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && grep -qxF "$want" "$stamp" \
     && "$VENV/bin/python" -c 'import napari_gsm' 2>/dev/null; then
    return 0
  fi
  log "pip install -e '.[$extras]' (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
}

if command -v dpkg-query >/dev/null 2>&1; then ensure_debs "${DEB_PACKAGES[@]}"
else log "not a Debian system: skipping apt (Xvfb + Qt libraries must already be installed)"; fi
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
