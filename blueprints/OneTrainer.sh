#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = OneTrainer
# aikore.category = Training
# aikore.description = OneTrainer's desktop UI (fine-tuning, LoRA, embeddings) in the browser through noVNC
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 1800
# aikore.path = none
# aikore.gpu = required
# aikore.disk = 15 GB
# aikore.host_packages = xvfb x11vnc novnc python3-tk (Debian/Ubuntu names)
### AIKORE-METADATA-END ###
#
# Installs (first start) or updates (later starts) Nerogar/OneTrainer in a venv
# (requirements-global.txt, then the CUDA or CPU platform file, as its own
# installer does). OneTrainer's UI is a desktop (Tk) program, so this script
# gives it a screen of its own: Xvfb on a free display, x11vnc on it (loopback
# only, a port of its own), and noVNC's web client served by websockify on
# 127.0.0.1:$WEBUI_PORT. noVNC opens its websocket at the root of its origin
# (aikore.path = none): its subdomain or public port. The instance ends when
# OneTrainer's window is closed.
#   <instance>/OneTrainer  the git checkout (workspace/, training presets)
#   <instance>/env         the Python venv (touch <instance>/.rebuild to recreate it)
#   <instance>/models      -> $MODELS_DIR (base models: choose them under it)
#   <instance>/outputs     -> $INSTANCE_OUTPUT_DIR (trained models)
#
# Settings: set them here or in the environment.
#   ONETRAINER_REPO, ONETRAINER_REF  repository and branch/tag/commit
#   ONETRAINER_PYTHON  interpreter for the venv (default: python3.11, 3.10, 3.12 or python3)
#   ONETRAINER_SCREEN  the virtual screen, WIDTHxHEIGHTxDEPTH (default: 1600x1000x24)
#   NOVNC_DIR          noVNC's web files (default: /usr/share/novnc, the novnc package)
set -euo pipefail

if [[ -z "${AIKORE_FUNCTIONS:-}" || ! -f "${AIKORE_FUNCTIONS}" ]]; then
  echo "[aikore] ERROR: AIKORE_FUNCTIONS is not set or missing; start this blueprint from AiKore" >&2
  exit 1
fi
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "${AIKORE_FUNCTIONS}"

: "${WEBUI_PORT:?WEBUI_PORT is not set}"
: "${MODELS_DIR:?MODELS_DIR is not set}"
INSTANCE_DIR="${INSTANCE_DIR:-$PWD}"
INSTANCE_OUTPUT_DIR="${INSTANCE_OUTPUT_DIR:-$INSTANCE_DIR/output}"

ONETRAINER_REPO="${ONETRAINER_REPO:-https://github.com/Nerogar/OneTrainer.git}"
ONETRAINER_REF="${ONETRAINER_REF:-}"
ONETRAINER_SCREEN="${ONETRAINER_SCREEN:-1600x1000x24}"
NOVNC_DIR="${NOVNC_DIR:-/usr/share/novnc}"
APP_DIR="$INSTANCE_DIR/OneTrainer"
VENV_DIR="$INSTANCE_DIR/env"
WEB_DIR="$INSTANCE_DIR/run/novnc"

for tool in Xvfb x11vnc; do
  command -v "$tool" >/dev/null 2>&1 || aikore_die "$tool is not installed (apt-get install xvfb x11vnc novnc)"
done
[[ -f "$NOVNC_DIR/vnc.html" ]] || aikore_die "noVNC is not in $NOVNC_DIR (apt-get install novnc, or set NOVNC_DIR)"
PLATFORM_REQUIREMENTS=requirements-cuda.txt
if ! aikore_nvidia_driver; then
  aikore_warn "no NVIDIA driver found: OneTrainer runs on the CPU (requirements-default.txt), too slow to train"
  PLATFORM_REQUIREMENTS=requirements-default.txt
fi
cd "$INSTANCE_DIR"

# 1. Code
aikore_git_sync "$ONETRAINER_REPO" "$APP_DIR" "$ONETRAINER_REF"

# 2. Python environment (3.10 to 3.12, with Tk for the UI) and requirements,
#    run from the checkout as OneTrainer's installer runs them
PYTHON_BIN=$(aikore_python_for "${ONETRAINER_PYTHON:-}" python3.11 python3.10 python3.12 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"
aikore_python_has tkinter || aikore_die "Python's Tk module is missing (apt-get install python3-tk)"
aikore_pip_install_requirements "$APP_DIR/requirements-global.txt"
aikore_pip_install_requirements "$APP_DIR/$PLATFORM_REQUIREMENTS"
if ! command -v websockify >/dev/null 2>&1; then
  aikore_python_has websockify || python -m pip install websockify || aikore_die "cannot install websockify"
fi

# 3. Shared models and outputs
mkdir -p -- "$INSTANCE_OUTPUT_DIR"
aikore_link_dir "$INSTANCE_DIR/models" "$MODELS_DIR"
aikore_link_dir "$INSTANCE_DIR/outputs" "$INSTANCE_OUTPUT_DIR"

# 4. A screen: Xvfb on a free display, x11vnc on it, noVNC in front
display=""
for n in $(seq 200 299); do
  if [[ ! -e "/tmp/.X11-unix/X$n" && ! -e "/tmp/.X$n-lock" ]]; then
    display=$n
    break
  fi
done
[[ -n "$display" ]] || aikore_die "no free X display between :200 and :299"
VNC_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
children=()
cleanup() {
  if ((${#children[@]})); then kill "${children[@]}" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
Xvfb ":$display" -screen 0 "$ONETRAINER_SCREEN" -nolisten tcp &
children+=("$!")
for _ in $(seq 100); do
  [[ -e "/tmp/.X11-unix/X$display" ]] && break
  sleep 0.1
done
[[ -e "/tmp/.X11-unix/X$display" ]] || aikore_die "Xvfb did not start on :$display"
export DISPLAY=":$display"
x11vnc -display "$DISPLAY" -localhost -rfbport "$VNC_PORT" -forever -shared -nopw -quiet &
children+=("$!")
# noVNC's client, opened at the root: it connects and follows the browser's size
mkdir -p -- "$WEB_DIR"
for entry in "$NOVNC_DIR"/*; do
  ln -sfn -- "$entry" "$WEB_DIR/${entry##*/}"
done
rm -f -- "$WEB_DIR/index.html"
printf '<!DOCTYPE html><meta http-equiv="refresh" content="0; url=vnc.html?autoconnect=true&amp;resize=remote&amp;reconnect=true">\n' \
  >"$WEB_DIR/index.html"
websockify --web "$WEB_DIR" "127.0.0.1:$WEBUI_PORT" "127.0.0.1:$VNC_PORT" &
children+=("$!")

# 5. Run OneTrainer's UI on that screen; the instance ends with it
cd "$APP_DIR"
aikore_log "Starting OneTrainer on display $DISPLAY, shown at http://127.0.0.1:${WEBUI_PORT}/ (GPUs: $(aikore_gpus_shown))"
python scripts/train_ui.py
