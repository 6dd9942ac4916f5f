#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = kohya_ss
# aikore.category = Training
# aikore.description = Kohya's GUI: LoRA, DreamBooth and fine-tuning trainers for Stable Diffusion
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 1800
# aikore.path = none
# aikore.gpu = required
# aikore.disk = 20 GB
### AIKORE-METADATA-END ###
#
# Installs (first start) or updates (later starts) bmaltais/kohya_ss and its
# sd-scripts submodule, then runs its Gradio GUI (kohya_gui.py) headless on
# 127.0.0.1:$WEBUI_PORT. Gradio serves at the root of its origin only
# (aikore.path = none): its subdomain or public port.
#   <instance>/kohya_ss   the git checkout (with sd-scripts)
#   <instance>/env        the Python venv (touch <instance>/.rebuild to recreate it)
#   <instance>/models     -> $MODELS_DIR (base models to train from: type paths under it)
#   <instance>/datasets   training images, kept in the instance
#   <instance>/outputs    -> $INSTANCE_OUTPUT_DIR (trained models, samples, logs)
#
# Settings: set them here or in the environment.
#   KOHYA_REPO, KOHYA_REF  repository and branch/tag/commit (default: the default branch)
#   KOHYA_PYTHON           interpreter for the venv (default: python3.11, 3.10 or python3)
#   KOHYA_REQUIREMENTS     requirements file of the checkout (default: requirements_linux.txt,
#                          which pins its CUDA build of PyTorch)
#   KOHYA_ARGS             extra arguments for kohya_gui.py
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

KOHYA_REPO="${KOHYA_REPO:-https://github.com/bmaltais/kohya_ss.git}"
KOHYA_REF="${KOHYA_REF:-}"
KOHYA_REQUIREMENTS="${KOHYA_REQUIREMENTS:-requirements_linux.txt}"
APP_DIR="$INSTANCE_DIR/kohya_ss"
VENV_DIR="$INSTANCE_DIR/env"

if ! aikore_nvidia_driver; then
  aikore_warn "no NVIDIA driver found: the GUI starts, but training needs a CUDA GPU"
fi
cd "$INSTANCE_DIR"

# 1. Code: kohya_ss and its sd-scripts submodule (its requirements install it with -e)
aikore_git_sync "$KOHYA_REPO" "$APP_DIR" "$KOHYA_REF"
aikore_git_submodules "$APP_DIR"

# 2. Python environment
PYTHON_BIN=$(aikore_python_for "${KOHYA_PYTHON:-}" python3.11 python3.10 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"

# 3. Requirements, as kohya's setup installs them: the Linux file pins PyTorch
#    (CUDA wheels, from the index it names) and includes requirements.txt, whose
#    relative lines (-e ./sd-scripts) need the checkout's folder (pip runs there).
aikore_pip_install_requirements "$APP_DIR/$KOHYA_REQUIREMENTS"

# 4. Shared models, per-instance datasets and outputs
mkdir -p -- "$INSTANCE_DIR/datasets" "$INSTANCE_OUTPUT_DIR"
aikore_link_dir "$INSTANCE_DIR/models" "$MODELS_DIR"
aikore_link_dir "$INSTANCE_DIR/outputs" "$INSTANCE_OUTPUT_DIR"

# 5. Run (exec: the GUI replaces this shell and receives the panel's signals)
export GRADIO_ANALYTICS_ENABLED=False
cd "$APP_DIR"
aikore_log "Starting kohya_ss on http://127.0.0.1:${WEBUI_PORT} (GPUs: $(aikore_gpus_shown))"
# shellcheck disable=SC2086 # KOHYA_ARGS is split into separate arguments on purpose
exec python kohya_gui.py --listen 127.0.0.1 --server_port "$WEBUI_PORT" --headless ${KOHYA_ARGS:-}
