#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = ComfyUI
# aikore.category = Image Generation
# aikore.description = Node-based Stable Diffusion UI
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 900
# aikore.path = strip
# aikore.gpu = optional
# aikore.disk = 15 GB
### AIKORE-METADATA-END ###
#
# Installs (first start) or updates (later starts) ComfyUI in this instance's
# folder, then runs it on 127.0.0.1:$WEBUI_PORT.
#   <instance>/ComfyUI   the git checkout (models/* link to the shared $MODELS_DIR)
#   <instance>/env       the Python venv (touch <instance>/.rebuild to recreate it)
#   A satellite runs this script from its parent's folder with the parent's code
#   and venv; its user, input and temp folders live in $AIKORE_SATELLITE_DIR.
#   $INSTANCE_OUTPUT_DIR generated images
#
# Settings: set them here or in the environment.
#   COMFYUI_REPO     git URL                  (default: the official repository)
#   COMFYUI_REF      branch, tag or commit    (default: the default branch)
#   COMFYUI_PYTHON   interpreter for the venv (default: python3.12, python3.11 or python3)
#   TORCH_INDEX_URL  PyTorch wheel index      (default: CUDA 12.8 wheels; CPU wheels
#                                             when no NVIDIA driver is loaded)
#   COMFYUI_ARGS     extra arguments for main.py, e.g. "--lowvram --preview-method auto"
# Without an NVIDIA driver ComfyUI runs on the CPU (--cpu), with a warning.
# It only uses relative URLs, so under /instance/<slug>/ it gets the path
# without that prefix (aikore.path = strip).
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

COMFYUI_REPO="${COMFYUI_REPO:-https://github.com/comfyanonymous/ComfyUI.git}"
COMFYUI_REF="${COMFYUI_REF:-}"
COMFYUI_CPU=0
if ! aikore_nvidia_driver; then
  COMFYUI_CPU=1
  aikore_warn "no NVIDIA driver found: ComfyUI runs on the CPU (--cpu), which is slow"
fi
if [[ "$COMFYUI_CPU" == 1 ]]; then
  TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
else
  TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
fi
APP_DIR="$INSTANCE_DIR/ComfyUI"
VENV_DIR="$INSTANCE_DIR/env"

cd "$INSTANCE_DIR"

# 1. Code
aikore_git_sync "$COMFYUI_REPO" "$APP_DIR" "$COMFYUI_REF"

# 2. Python environment
PYTHON_BIN=$(aikore_python_for "${COMFYUI_PYTHON:-}" python3.12 python3.11 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"

# 3. PyTorch first (CUDA or CPU wheels), so that requirements.txt does not pull
#    a default build from PyPI; skipped once torch imports. No torchaudio:
#    ComfyUI does not need it (and a mismatched pair breaks the import).
if aikore_python_has torch; then
  aikore_log "PyTorch $(python -c 'import torch; print(torch.__version__)') is installed"
else
  aikore_log "Installing PyTorch from $TORCH_INDEX_URL"
  python -m pip install torch torchvision --index-url "$TORCH_INDEX_URL" ||
    aikore_die "cannot install PyTorch from $TORCH_INDEX_URL"
fi

# 4. ComfyUI's requirements (only when requirements.txt changed), then what its
#    entry imports but the requirements omit (older refs: 0.3.64 needs requests)
#    (torchaudio is left out: ComfyUI runs without it, and PyPI's build would not
#    match the torch installed above)
#    (a satellite uses its parent's environment as it is)
if ! aikore_is_satellite; then
  REQUIREMENTS="$INSTANCE_DIR/comfyui-requirements.txt"
  grep -viE '^[[:space:]]*torchaudio([^[:alnum:]_-]|$)' "$APP_DIR/requirements.txt" >"$REQUIREMENTS" || true
  aikore_pip_install_requirements "$REQUIREMENTS"
  mapfile -t MISSING < <(aikore_missing_imports "$APP_DIR" main.py server.py execution.py nodes.py folder_paths.py \
    'comfy/*.py' 'comfy_execution/*.py' 'app/*.py')
  if ((${#MISSING[@]})); then
    aikore_log "ComfyUI imports modules its requirements do not install; installing: ${MISSING[*]}"
    python -m pip install "${MISSING[@]}" || aikore_die "cannot install ${MISSING[*]}"
  fi
fi

# 5. Shared models and per-instance outputs
aikore_link_models "$APP_DIR/models" \
  checkpoints loras vae controlnet clip clip_vision upscale_models \
  embeddings unet diffusion_models text_encoders
mkdir -p -- "$INSTANCE_OUTPUT_DIR"

# 6. Run (exec: ComfyUI replaces this shell and receives the panel's signals)
cd "$APP_DIR"
CPU_ARGS=()
[[ "$COMFYUI_CPU" == 1 ]] && CPU_ARGS=(--cpu)
# A satellite keeps its writable state in its own folder, never in the parent's checkout.
if aikore_is_satellite; then
  mkdir -p -- "$AIKORE_SATELLITE_DIR/user" "$AIKORE_SATELLITE_DIR/input" "$AIKORE_SATELLITE_DIR/temp"
  CPU_ARGS+=(--user-directory "$AIKORE_SATELLITE_DIR/user" --input-directory "$AIKORE_SATELLITE_DIR/input"
    --temp-directory "$AIKORE_SATELLITE_DIR/temp")
fi
aikore_log "Starting ComfyUI on http://127.0.0.1:${WEBUI_PORT} (GPUs: $(aikore_gpus_shown)${CPU_ARGS[*]:+, CPU only})"
# shellcheck disable=SC2086 # COMFYUI_ARGS is split into separate arguments on purpose
exec python main.py --listen 127.0.0.1 --port "$WEBUI_PORT" \
  --output-directory "$INSTANCE_OUTPUT_DIR" "${CPU_ARGS[@]}" ${COMFYUI_ARGS:-}
