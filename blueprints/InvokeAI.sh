#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = InvokeAI
# aikore.category = Image Generation
# aikore.description = Invoke: canvas, node workflows and a model manager for SD, SDXL and FLUX
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 1200
# aikore.path = none
# aikore.gpu = required
# aikore.disk = 15 GB
### AIKORE-METADATA-END ###
#
# Installs (first start) or upgrades (when INVOKEAI_VERSION changes) the invokeai
# package from PyPI into this instance's venv, with PyTorch from the CUDA wheel
# index, then runs invokeai-web on 127.0.0.1:$WEBUI_PORT. Its web app calls its
# API at absolute paths (/api/...), so it lives at the root of its own origin
# (aikore.path = none): its subdomain or public port.
#   <instance>/env        the Python venv (touch <instance>/.rebuild to recreate it)
#   <instance>/invokeai   Invoke's root: invokeai.yaml, databases, configs
#   $MODELS_DIR/invokeai  the models Invoke installs (shared by every Invoke instance)
#   $INSTANCE_OUTPUT_DIR  generated images
# Invoke reads its settings from INVOKEAI_* variables (they override invokeai.yaml).
#
# Settings: set them here or in the environment.
#   INVOKEAI_VERSION   pip version specifier (default: the latest release), e.g. "==6.0.2"
#   INVOKEAI_PYTHON    interpreter for the venv (default: python3.12, 3.11 or python3)
#   TORCH_INDEX_URL    PyTorch wheel index (default: CUDA 12.8 wheels; CPU wheels when
#                      no NVIDIA driver is loaded)
#   INVOKEAI_ARGS      extra arguments for invokeai-web
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
INVOKEAI_VERSION="${INVOKEAI_VERSION:-}"
VENV_DIR="$INSTANCE_DIR/env"
ROOT_DIR="$INSTANCE_DIR/invokeai"

if aikore_nvidia_driver; then
  TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
else
  aikore_warn "no NVIDIA driver found: Invoke runs on the CPU, which is very slow"
  TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
cd "$INSTANCE_DIR"

# 1. Python environment (Invoke supports Python 3.11 and 3.12)
PYTHON_BIN=$(aikore_python_for "${INVOKEAI_PYTHON:-}" python3.12 python3.11 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"

# 2. Invoke from PyPI, its PyTorch from the wheel index (pip picks the torch
#    version Invoke pins, built for that index); skipped while unchanged
REQUIREMENTS="$INSTANCE_DIR/invokeai-requirements.txt"
printf 'invokeai%s\n' "$INVOKEAI_VERSION" >"$REQUIREMENTS"
aikore_pip_install_requirements "$REQUIREMENTS" --extra-index-url "$TORCH_INDEX_URL"

# 3. Root, shared models and outputs
mkdir -p -- "$ROOT_DIR" "$MODELS_DIR/invokeai" "$INSTANCE_OUTPUT_DIR"
export INVOKEAI_ROOT="$ROOT_DIR"
export INVOKEAI_HOST=127.0.0.1 INVOKEAI_PORT="$WEBUI_PORT"
export INVOKEAI_MODELS_DIR="$MODELS_DIR/invokeai" INVOKEAI_OUTPUTS_DIR="$INSTANCE_OUTPUT_DIR"

# 4. Run (exec: Invoke replaces this shell and receives the panel's signals)
aikore_log "Starting InvokeAI on http://127.0.0.1:${WEBUI_PORT} (GPUs: $(aikore_gpus_shown))"
# shellcheck disable=SC2086 # INVOKEAI_ARGS is split into separate arguments on purpose
exec invokeai-web --root "$ROOT_DIR" ${INVOKEAI_ARGS:-}
