# Shared set-up for run.sh and test.sh (sourced, not run): Debian libraries and the .venv.
# Callers set LOG_TAG and run from the repository root.

PYTHON=${PYTHON:-python3}
VENV=.venv
# From the napari-env notes: what a minimal Debian bookworm needs to import napari and draw
# with Qt (test.sh adds Xvfb to render headless).
QT_DEB_PACKAGES=(libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-render-util0 libxcb-render0 libxcb-shape0 libxcb-util1 libxcb-xkb1)

log() { printf '[%s] %s\n' "${LOG_TAG:-setup}" "$*" >&2; }

# Install the given Debian packages that are missing (none: no apt at all).
ensure_debs() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "not a Debian system: skipping apt (Qt's system libraries must already be installed)"
    return 0
  fi
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

# Create .venv if needed and `pip install -e '.[EXTRAS]'` unless an install of these extras
# (or of any of the further ones named, which include them) matches pyproject.toml.
ensure_venv() {  # $1 = extras to install, $2... = extras whose install also satisfies
  local extras=$1 stamp="$VENV/.napari-gsm-install-stamp" hash e
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -f "$stamp" ] && "$VENV/bin/python" -c 'import napari_gsm' 2>/dev/null; then
    for e in "$@"; do
      grep -qxF "$e $hash" "$stamp" && return 0
    done
  fi
  log "pip install -e '.[$extras]' (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  echo "$extras $hash" > "$stamp"
}
