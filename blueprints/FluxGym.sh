#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = FluxGym
# aikore.category = Training
# aikore.description = Simple FLUX LoRA training UI
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 900
# aikore.path = none
# aikore.gpu = required
# aikore.disk = 30 GB
### AIKORE-METADATA-END ###
#
# FluxGym's Gradio UI is started by its own app.py (no root path option), so
# it is reached at the root of its own origin (aikore.path = none): its
# subdomain or public port, never /instance/<slug>/.
#
# Installs (first start) or updates (later starts) FluxGym and the kohya-ss
# sd-scripts trainer it drives (branch sd3, cloned into fluxgym/sd-scripts),
# then runs its Gradio UI on 127.0.0.1:$WEBUI_PORT.
#   <instance>/fluxgym             the app (datasets/ stay in the instance)
#   <instance>/fluxgym/sd-scripts  kohya-ss/sd-scripts
#   <instance>/fluxgym/models/{unet,vae,clip} -> $MODELS_DIR/{unet,vae,clip}
#                                  (the same folders ComfyUI uses for FLUX)
#   <instance>/fluxgym/outputs     -> $INSTANCE_OUTPUT_DIR (trained LoRAs, samples)
#   <instance>/env                 the Python venv (touch <instance>/.rebuild to recreate it)
#
# Settings: set them here or in the environment.
#   FLUXGYM_REPO, FLUXGYM_REF        app repository and branch/tag/commit
#   SD_SCRIPTS_REPO, SD_SCRIPTS_REF  trainer repository and ref (default: sd3)
#   FLUXGYM_PYTHON                   interpreter for the venv (default: python3.11, 3.10, 3.12 or python3)
#   TORCH_INDEX_URL                  PyTorch wheel index (default: CUDA 12.4 wheels, which
#                                    carry the torch version pinned by FluxGym)
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

FLUXGYM_REPO="${FLUXGYM_REPO:-https://github.com/cocktailpeanut/fluxgym.git}"
FLUXGYM_REF="${FLUXGYM_REF:-}"
SD_SCRIPTS_REPO="${SD_SCRIPTS_REPO:-https://github.com/kohya-ss/sd-scripts.git}"
SD_SCRIPTS_REF="${SD_SCRIPTS_REF:-sd3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu124}"
APP_DIR="$INSTANCE_DIR/fluxgym"
VENV_DIR="$INSTANCE_DIR/env"

cd "$INSTANCE_DIR"

# 1. Code: FluxGym, and sd-scripts inside it (app.py imports it from there)
aikore_git_sync "$FLUXGYM_REPO" "$APP_DIR" "$FLUXGYM_REF"
aikore_git_sync "$SD_SCRIPTS_REPO" "$APP_DIR/sd-scripts" "$SD_SCRIPTS_REF"

# 2. Python environment
PYTHON_BIN=$(aikore_python_for "${FLUXGYM_PYTHON:-}" python3.11 python3.10 python3.12 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"

# 3. PyTorch first, from the CUDA wheel index and at the versions FluxGym's
#    requirements.txt pins (torch==..., torchvision==..., torchaudio==...), so
#    that neither requirements file pulls a different build from PyPI.
if aikore_python_has torch; then
  aikore_log "PyTorch $(python -c 'import torch; print(torch.__version__)') is installed"
else
  mapfile -t torch_pkgs < <(
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$APP_DIR/requirements.txt" |
      grep -E '^(torch|torchvision|torchaudio)([=<>!~;].*)?$' || true
  )
  if ((${#torch_pkgs[@]} == 0)); then
    torch_pkgs=(torch torchvision torchaudio)
  fi
  aikore_log "Installing ${torch_pkgs[*]} from $TORCH_INDEX_URL"
  python -m pip install "${torch_pkgs[@]}" --index-url "$TORCH_INDEX_URL" ||
    aikore_die "cannot install PyTorch from $TORCH_INDEX_URL"
fi

# 4. Requirements, in FluxGym's order: sd-scripts first (its file ends with
#    `-e .`, run from its folder), then FluxGym's own, which overrides some
#    sd-scripts pins (e.g. diffusers) - so it is reinstalled whenever the
#    sd-scripts step ran.
aikore_pip_install_requirements "$APP_DIR/sd-scripts/requirements.txt"
if ((AIKORE_PIP_RAN)); then
  aikore_pip_install_requirements --force "$APP_DIR/requirements.txt"
else
  aikore_pip_install_requirements "$APP_DIR/requirements.txt"
fi

# 5. Shared base models (FluxGym downloads the FLUX unet, vae and text encoders
#    into models/unet, models/vae and models/clip) and per-instance outputs.
aikore_link_models "$APP_DIR/models" unet vae clip
# Gradio does not resolve this link when it checks file access, so the sample
# gallery keeps working with outputs/ outside the app folder.
aikore_link_dir "$APP_DIR/outputs" "$INSTANCE_OUTPUT_DIR"

# 6. Run (exec: the app replaces this shell and receives the panel's signals).
#    Gradio reads its address from these variables.
export GRADIO_SERVER_NAME=127.0.0.1
export GRADIO_SERVER_PORT="$WEBUI_PORT"
export GRADIO_ANALYTICS_ENABLED=False
cd "$APP_DIR"
aikore_log "Starting FluxGym on http://127.0.0.1:${WEBUI_PORT} (GPUs: ${CUDA_VISIBLE_DEVICES:-all})"
exec python app.py
