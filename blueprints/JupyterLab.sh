#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = JupyterLab
# aikore.category = Development
# aikore.description = Notebooks, terminals and a file browser in the browser (no GPU needed)
# aikore.venv_type = venv
# aikore.venv_path = ./env
# aikore.ready = http
# aikore.stall_timeout = 600
# aikore.path = strip
# aikore.gpu = optional
# aikore.disk = 1 GB
### AIKORE-METADATA-END ###
#
# Installs JupyterLab from PyPI into this instance's venv (first start; later
# starts only when JUPYTERLAB_PACKAGES changes), then runs it on
# 127.0.0.1:$WEBUI_PORT.
#   <instance>/env         the Python venv (touch <instance>/.rebuild to recreate it)
#   <instance>/notebooks   the notebooks' folder (its root); models/ and outputs/
#                          inside it link to $MODELS_DIR and $INSTANCE_OUTPUT_DIR
#
# Every app has an origin of its own in AiKore (<slug>.<host>): a browser reaches
# JupyterLab at that origin's root (subdomain) or at /instance/<slug>/ there (path
# route, given to the app without the prefix: aikore.path = strip). So Jupyter
# serves at base_url "/" and both routes work: its pages' absolute URLs (/lab,
# /static, /api, the kernel websockets) stay on its own origin. Behind the proxy
# the Host header is <slug>.<host>, not localhost: ServerApp.allow_remote_access
# lets it through (it still listens on 127.0.0.1 only). AiKore's login guards
# the routes, so Jupyter's own token is off; its XSRF check stays on.
#
# Settings: set them here or in the environment.
#   JUPYTERLAB_PACKAGES  what pip installs (default: "jupyterlab ipykernel"; add
#                        e.g. "ipywidgets matplotlib")
#   JUPYTERLAB_PYTHON    interpreter for the venv (default: python3.12, 3.11 or python3)
#   JUPYTERLAB_ARGS      extra arguments for `jupyter lab`
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
VENV_DIR="$INSTANCE_DIR/env"
NOTEBOOKS_DIR="$INSTANCE_DIR/notebooks"
JUPYTERLAB_PACKAGES="${JUPYTERLAB_PACKAGES:-jupyterlab ipykernel}"

cd "$INSTANCE_DIR"

# 1. Python environment
PYTHON_BIN=$(aikore_python_for "${JUPYTERLAB_PYTHON:-}" python3.12 python3.11 python3)
aikore_venv_create "$VENV_DIR" "$PYTHON_BIN"

# 2. JupyterLab (pip skips this while the package list is unchanged)
REQUIREMENTS="$INSTANCE_DIR/jupyterlab-requirements.txt"
tr -s '[:space:]' '\n' <<<"$JUPYTERLAB_PACKAGES" | sed '/^$/d' >"$REQUIREMENTS"
aikore_pip_install_requirements "$REQUIREMENTS"

# 3. The notebooks' folder, with the shared models and this instance's outputs
mkdir -p -- "$NOTEBOOKS_DIR" "$INSTANCE_OUTPUT_DIR"
aikore_link_dir "$NOTEBOOKS_DIR/models" "$MODELS_DIR"
aikore_link_dir "$NOTEBOOKS_DIR/outputs" "$INSTANCE_OUTPUT_DIR"

# 4. Run (exec: Jupyter replaces this shell and receives the panel's signals)
ROOT_ARGS=()
if [[ "$(id -u)" == 0 ]]; then
  ROOT_ARGS=(--allow-root) # as in a container running as root
fi
export JUPYTER_CONFIG_DIR="$INSTANCE_DIR/.jupyter" JUPYTER_RUNTIME_DIR="$INSTANCE_DIR/run/jupyter"
aikore_log "Starting JupyterLab on http://127.0.0.1:${WEBUI_PORT}/ (GPUs: $(aikore_gpus_shown))"
# shellcheck disable=SC2086 # JUPYTERLAB_ARGS is split into separate arguments on purpose
exec jupyter lab --no-browser "${ROOT_ARGS[@]}" \
  --ServerApp.ip=127.0.0.1 --ServerApp.port="$WEBUI_PORT" --ServerApp.port_retries=0 \
  --ServerApp.base_url=/ --ServerApp.allow_remote_access=True \
  --IdentityProvider.token= --ServerApp.root_dir="$NOTEBOOKS_DIR" \
  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  ${JUPYTERLAB_ARGS:-}
