#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = AI Toolkit
# aikore.category = Training
# aikore.description = Ostris' AI Toolkit: LoRA and fine-tuning for FLUX, SDXL, Wan and more, with its web UI
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 1800
# aikore.path = none
# aikore.gpu = required
# aikore.disk = 30 GB
### AIKORE-METADATA-END ###
#
# Installs (first start) or updates (later starts) ostris/ai-toolkit: the Python
# trainer in a venv (PyTorch from the CUDA wheel index, then requirements.txt),
# and its Next.js UI (ui/: npm install, prisma database, build; built again only
# when the checkout changed). Then runs the UI on 127.0.0.1:$WEBUI_PORT with its
# job worker, which starts trainings with this venv's python. A Next.js app at
# the root of its own origin (aikore.path = none): its subdomain or public port.
# Needs Node.js 18 or later (node, npm, npx) on the host.
#   <instance>/ai-toolkit          the git checkout
#   <instance>/env                 the Python venv (touch <instance>/.rebuild to recreate it)
#   <instance>/ai-toolkit/output   -> $INSTANCE_OUTPUT_DIR (trained LoRAs, samples)
#   $MODELS_DIR/huggingface        Hugging Face downloads (HF_HOME), shared
#
# Settings: set them here or in the environment.
#   AITOOLKIT_REPO, AITOOLKIT_REF  repository and branch/tag/commit
#   AITOOLKIT_PYTHON               interpreter for the venv (default: python3.12, 3.11, 3.10, python3)
#   TORCH_INDEX_URL                PyTorch wheel index (default: CUDA 12.8 wheels)
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

AITOOLKIT_REPO="${AITOOLKIT_REPO:-https://github.com/ostris/ai-toolkit.git}"
AITOOLKIT_REF="${AITOOLKIT_REF:-}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
APP_DIR="$INSTANCE_DIR/ai-toolkit"
VENV_DIR="$INSTANCE_DIR/env"
UI_STAMP="$INSTANCE_DIR/.aikore-ui-built"

for tool in node npm npx; do
  command -v "$tool" >/dev/null 2>&1 || aikore_die "$tool is not installed: AI Toolkit's UI needs Node.js 18 or later"
done
if ! aikore_nvidia_driver; then
  aikore_warn "no NVIDIA driver found: the UI starts, but training needs a CUDA GPU"
fi
cd "$INSTANCE_DIR"

# 1. Code
aikore_git_sync "$AITOOLKIT_REPO" "$APP_DIR" "$AITOOLKIT_REF"

# 2. Python environment, PyTorch first (so requirements.txt does not pull a
#    default build from PyPI), then the trainer's requirements
PYTHON_BIN=$(aikore_python_for "${AITOOLKIT_PYTHON:-}" python3.12 python3.11 python3.10 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"
if aikore_python_has torch; then
  aikore_log "PyTorch $(python -c 'import torch; print(torch.__version__)') is installed"
else
  aikore_log "Installing PyTorch from $TORCH_INDEX_URL"
  python -m pip install torch torchvision torchaudio --index-url "$TORCH_INDEX_URL" ||
    aikore_die "cannot install PyTorch from $TORCH_INDEX_URL"
fi
aikore_pip_install_requirements "$APP_DIR/requirements.txt"

# 3. Outputs and shared Hugging Face downloads
aikore_link_dir "$APP_DIR/output" "$INSTANCE_OUTPUT_DIR"
export HF_HOME="$MODELS_DIR/huggingface"
mkdir -p -- "$HF_HOME"

# 4. The UI: built again only when the checkout moved
cd "$APP_DIR/ui"
HEAD=$(git -c safe.directory='*' -C "$APP_DIR" rev-parse HEAD)
if [[ ! -f "$UI_STAMP" || "$(<"$UI_STAMP")" != "$HEAD" || ! -d .next ]]; then
  aikore_log "Building the UI (npm install, database, next build)"
  rm -f -- "$UI_STAMP"
  npm install --no-audit --no-fund || aikore_die "npm install failed in $APP_DIR/ui"
  { npx prisma generate && npx prisma db push; } || aikore_die "cannot prepare the UI's database"
  npm run build || aikore_die "the UI's build failed"
  printf '%s\n' "$HEAD" >"$UI_STAMP"
fi

# 5. Run the worker and the UI together (exec: concurrently receives the
#    panel's signals and ends both)
aikore_log "Starting AI Toolkit on http://127.0.0.1:${WEBUI_PORT} (GPUs: $(aikore_gpus_shown))"
exec npx concurrently --kill-others --names WORKER,UI \
  "node dist/worker.js" "npx next start --hostname 127.0.0.1 --port $WEBUI_PORT"
