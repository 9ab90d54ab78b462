#!/usr/bin/env bash
# The main job:  bash run.sh [demo options...]
# Sets up .venv (`pip install -e '.[napari]'`, plus the Debian libraries Qt needs) if needed,
# then runs `napari-gsm demo`: trains on sample_data/, fits, writes .pts + overlay PNGs to
# out/demo/, prints a summary, and opens napari with the widgets when a display exists.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv
# From docs/napari-env.md: what a minimal bookworm needs to import napari (Xvfb not needed here).
DEB_PACKAGES=(libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-render-util0 libxcb-render0 libxcb-shape0 libxcb-util1 libxcb-xkb1)

log() { printf '[run.sh] %s\n' "$*" >&2; }

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

ensure_venv() {
  local stamp="$VENV/.napari-gsm-install-stamp" hash
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
  # An install made by test.sh ('.[test]') includes '.[napari]'.
  if [ -f "$stamp" ] && { grep -qxF "napari $hash" "$stamp" || grep -qxF "test $hash" "$stamp"; } \
     && "$VENV/bin/python" -c 'import napari_gsm' 2>/dev/null; then
    return 0
  fi
  log "pip install -e '.[napari]' (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[napari]'
  echo "napari $hash" > "$stamp"
}

if command -v dpkg-query >/dev/null 2>&1; then ensure_debs "${DEB_PACKAGES[@]}"
else log "not a Debian system: skipping apt (Qt's system libraries must already be installed)"; fi
ensure_venv

exec "$VENV/bin/napari-gsm" demo "$@"
