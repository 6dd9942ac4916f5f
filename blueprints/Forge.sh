#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = Stable Diffusion WebUI Forge
# aikore.category = Image Generation
# aikore.description = lllyasviel's Forge: the A1111 web UI, faster, with FLUX support
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 1800
# aikore.path = none
# aikore.gpu = required
# aikore.disk = 15 GB
### AIKORE-METADATA-END ###
#
# Installs (first start) or updates (later starts) Stable Diffusion WebUI Forge,
# then runs its launch.py on 127.0.0.1:$WEBUI_PORT. launch.py installs what it
# needs into the active venv itself (PyTorch through TORCH_COMMAND, then
# requirements_versions.txt and its repositories/), on the first start and after
# updates. Gradio serves at the root of its origin (aikore.path = none): its
# subdomain or public port (Forge's --subpath would move it off the root).
#   <instance>/forge      the git checkout (its data: config.json, extensions/ ...)
#   <instance>/env        the Python venv (touch <instance>/.rebuild to recreate it)
#   $MODELS_DIR/{checkpoints,loras,vae,embeddings,controlnet,text_encoders}
#                         the shared model folders (those of ComfyUI too)
#   $INSTANCE_OUTPUT_DIR  generated images (forge/outputs links there)
#
# Settings: set them here or in the environment.
#   FORGE_REPO, FORGE_REF  repository and branch/tag/commit (default: the default branch)
#   FORGE_PYTHON           interpreter for the venv (default: python3.10, 3.11 or python3;
#                          Forge is made for Python 3.10)
#   TORCH_COMMAND          how launch.py installs PyTorch (default: its own choice)
#   FORGE_ARGS             extra arguments for launch.py, e.g. "--xformers --api"
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

FORGE_REPO="${FORGE_REPO:-https://github.com/lllyasviel/stable-diffusion-webui-forge.git}"
FORGE_REF="${FORGE_REF:-}"
APP_DIR="$INSTANCE_DIR/forge"
VENV_DIR="$INSTANCE_DIR/env"
CPU_ARGS=()
if ! aikore_nvidia_driver; then
  aikore_warn "no NVIDIA driver found: Forge runs on the CPU, which is very slow"
  CPU_ARGS=(--skip-torch-cuda-test --always-cpu)
fi

cd "$INSTANCE_DIR"

# 1. Code
aikore_git_sync "$FORGE_REPO" "$APP_DIR" "$FORGE_REF"

# 2. Python environment (launch.py installs into whatever `python` is active)
PYTHON_BIN=$(aikore_python_for "${FORGE_PYTHON:-}" python3.10 python3.11 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"

# 3. Shared models and per-instance outputs
MODEL_DIRS=(checkpoints loras vae embeddings controlnet text_encoders)
for sub in "${MODEL_DIRS[@]}"; do
  mkdir -p -- "$MODELS_DIR/$sub"
done
aikore_link_dir "$APP_DIR/outputs" "$INSTANCE_OUTPUT_DIR"

# 4. Run (exec: launch.py replaces this shell and receives the panel's signals)
export GRADIO_ANALYTICS_ENABLED=False
cd "$APP_DIR"
aikore_log "Starting Forge on http://127.0.0.1:${WEBUI_PORT} (GPUs: $(aikore_gpus_shown))"
# shellcheck disable=SC2086 # FORGE_ARGS is split into separate arguments on purpose
exec python launch.py --server-name 127.0.0.1 --port "$WEBUI_PORT" --skip-python-version-check \
  --ckpt-dir "$MODELS_DIR/checkpoints" --lora-dir "$MODELS_DIR/loras" --vae-dir "$MODELS_DIR/vae" \
  --embeddings-dir "$MODELS_DIR/embeddings" --controlnet-dir "$MODELS_DIR/controlnet" \
  --text-encoder-dir "$MODELS_DIR/text_encoders" "${CPU_ARGS[@]}" ${FORGE_ARGS:-}
