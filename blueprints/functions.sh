#!/usr/bin/env bash
# shellcheck shell=bash
#
# AiKore blueprint helpers.
#
# Blueprints load this file with:   source "${AIKORE_FUNCTIONS}"
# (the panel sets AIKORE_FUNCTIONS to its absolute path; a blueprint runs as
# <data>/instances/<name>/launch.sh, so it cannot find this file relatively).
#
# Every helper is safe under `set -euo pipefail`; sourcing this file defines
# functions, changes no shell option, and exports PIP_CONSTRAINT when the
# instance has package pins (aikore_apply_pins). Messages go to stdout with an
# "[aikore]" prefix and ANSI colours (set NO_COLOR=1 to drop the colours);
# aikore_die writes to stderr so that its message is not swallowed when it is
# called inside $(...). The panel logs stdout and stderr together, in order.

# Internal: print "[aikore] MSG" in the ANSI colour $1.
_aikore_print() {
  local color=$1
  shift
  if [[ -n "${NO_COLOR:-}" ]]; then
    printf '[aikore] %s\n' "$*"
  else
    printf '\033[%sm[aikore] %s\033[0m\n' "$color" "$*"
  fi
}

# aikore_log MSG... : info line (cyan).
aikore_log() {
  _aikore_print '1;36' "$@"
}

# aikore_warn MSG... : warning line (yellow); does not stop the script.
aikore_warn() {
  _aikore_print '1;33' "WARNING: $*"
}

# aikore_die MSG... : error line (red) on stderr, then exit 1.
aikore_die() {
  _aikore_print '1;31' "ERROR: $*" >&2
  exit 1
}

# aikore_is_satellite : return 0 when this run is a satellite: it runs its
# parent's launch.sh, code and environment (INSTANCE_DIR is the parent's folder)
# with its own GPUs, port, logs and outputs; its own writable folder is
# AIKORE_SATELLITE_DIR. A satellite never changes the parent's files: the
# helpers below then only use what the parent installed.
aikore_is_satellite() {
  [[ -n "${AIKORE_SATELLITE_DIR:-}" ]]
}

# aikore_apply_pins : export PIP_CONSTRAINT=<instance>/pins.txt when that file
# exists (package pins kept by the panel, pip constraints syntax), so every pip
# install honours it and an update never replaces a pinned package. Called
# when this file is sourced and again when an environment is activated.
aikore_apply_pins() {
  local pins="${INSTANCE_DIR:-$PWD}/pins.txt"
  if [[ -f "$pins" ]]; then
    export PIP_CONSTRAINT="$pins"
    if [[ -z "${_AIKORE_PINS_SAID:-}" ]]; then
      _AIKORE_PINS_SAID=1
      aikore_log "Package pins from $pins apply to every pip install (PIP_CONSTRAINT)"
    fi
  fi
}

# Internal: when a rebuild was requested (the marker "$INSTANCE_DIR/.rebuild",
# written by the panel's "Rebuild environment"), remove environment DIR so that
# it is created again; the marker is removed once the new env exists
# (_aikore_rebuild_done). Never in a satellite: the environment is the parent's.
_aikore_rebuild_env() {
  local dir=$1
  if ! aikore_is_satellite && [[ -e "${INSTANCE_DIR:-$PWD}/.rebuild" && -e "$dir" ]]; then
    aikore_warn "rebuild requested: removing the environment $dir to create it again"
    rm -rf -- "${dir:?}"
  fi
}

_aikore_rebuild_done() {
  if ! aikore_is_satellite; then
    rm -f -- "${INSTANCE_DIR:-$PWD}/.rebuild"
  fi
}

# Internal: in a satellite, activate the parent's environment DIR as it is, or die.
_aikore_satellite_env() {
  local dir=$1 kind=$2
  if [[ "$kind" == venv && -f "$dir/bin/activate" && -x "$dir/bin/python" ]]; then
    _aikore_source_lenient "$dir/bin/activate" || aikore_die "cannot activate the venv in $dir"
  elif [[ "$kind" == conda && -d "$dir/conda-meta" ]]; then
    export CONDA_PREFIX="$dir" CONDA_DEFAULT_ENV="$dir" CONDA_SHLVL=1
    export PATH="$dir/bin:$PATH"
    unset PYTHONHOME
    hash -r
  else
    aikore_die "this satellite runs the environment $dir of ${AIKORE_PARENT_NAME:-its parent}, which does not exist yet: start the parent once"
  fi
  aikore_log "Satellite: using $(python --version 2>&1) from the parent's environment $dir"
}

# aikore_pick_python CANDIDATE... : print the first interpreter on PATH that
# actually runs (a bare shim, e.g. pyenv's, is skipped), e.g.
# aikore_pick_python python3.11 python3.10 python3; die if none works.
aikore_pick_python() {
  local candidate
  for candidate in "$@"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv' >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  aikore_die "no Python interpreter found (tried: $*)"
}

# aikore_python_for CHOSEN CANDIDATE... : CHOSEN (a blueprint's setting, e.g. COMFYUI_PYTHON) when
# it is set, else the first CANDIDATE that aikore_pick_python accepts.
aikore_python_for() {
  local chosen="${1-}"
  shift
  if [[ -n "$chosen" ]]; then
    printf '%s\n' "$chosen"
  else
    aikore_pick_python "$@"
  fi
}

# aikore_python_has MODULE : return 0 if the active `python` can import MODULE.
aikore_python_has() {
  python -c 'import importlib, sys; importlib.import_module(sys.argv[1])' "${1:?aikore_python_has: MODULE required}" >/dev/null 2>&1
}

# aikore_nvidia_driver : return 0 when an NVIDIA driver is loaded on this host
# (AIKORE_FORCE_NO_GPU=1 pretends there is none).
aikore_nvidia_driver() {
  [[ "${AIKORE_FORCE_NO_GPU:-0}" != 1 ]] || return 1
  [[ -e /proc/driver/nvidia/version ]] && return 0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# aikore_gpus_shown : the GPUs given to this instance, for log lines
# ("none set" when the panel set no CUDA_VISIBLE_DEVICES).
aikore_gpus_shown() {
  printf '%s\n' "${CUDA_VISIBLE_DEVICES:-none set}"
}

# aikore_missing_imports DIR FILE... : print (one a line) the pip names of the
# top-level modules that FILE... (Python, relative to DIR; globs allowed) import
# and the active `python` cannot find: neither the standard library nor a
# module of DIR itself. An app's requirements may omit one (ComfyUI 0.3.64
# imports requests without listing it).
aikore_missing_imports() {
  local dir=${1:?aikore_missing_imports: DIR required}
  shift
  (cd "$dir" && python - "$@" <<'PY'
import ast, glob, importlib.util, os, sys
PIP_NAMES = {'PIL': 'pillow', 'yaml': 'pyyaml', 'cv2': 'opencv-python', 'sklearn': 'scikit-learn',
             'skimage': 'scikit-image', 'google': 'protobuf', 'dateutil': 'python-dateutil'}
found = set()
for pattern in sys.argv[1:]:
    for path in glob.glob(pattern):
        try:
            tree = ast.parse(open(path, encoding='utf-8').read())
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:  # top level only: the imports the entry needs to start
            if isinstance(node, ast.Import):
                found.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split('.')[0])
for name in sorted(found):
    local = os.path.isdir(name) or os.path.isfile(name + '.py')
    if name in sys.stdlib_module_names or local or importlib.util.find_spec(name) is not None:
        continue
    print(PIP_NAMES.get(name, name))
PY
  )
}

# ---------------------------------------------------------------------------
# git
# ---------------------------------------------------------------------------

# Internal: run git inside repository $1, never prompting for credentials, and
# trusting the folder for this call only (instance folders may belong to
# another uid in a container, which git otherwise refuses as "dubious").
_aikore_git() {
  local dir=$1
  shift
  GIT_TERMINAL_PROMPT=0 git -c safe.directory='*' -C "$dir" "$@"
}

# Internal: put checkout $1 on REF $2 (empty: the remote's default branch):
# a branch is checked out and fast-forwarded to origin; a tag or commit is
# checked out detached. Local changes that block this only give a warning.
_aikore_git_checkout() {
  local dir=$1 ref=$2 branch="" head
  if [[ -z "$ref" ]]; then
    branch=$(_aikore_git "$dir" symbolic-ref --quiet --short refs/remotes/origin/HEAD 2>/dev/null || true)
    if [[ -z "$branch" ]]; then
      _aikore_git "$dir" remote set-head origin --auto >/dev/null 2>&1 || true
      branch=$(_aikore_git "$dir" symbolic-ref --quiet --short refs/remotes/origin/HEAD 2>/dev/null || true)
    fi
    branch=${branch#origin/}
    if [[ -z "$branch" ]]; then
      aikore_warn "cannot tell the default branch of $dir; keeping the current checkout"
      return 0
    fi
  elif _aikore_git "$dir" show-ref --verify --quiet "refs/remotes/origin/$ref"; then
    branch=$ref
  fi

  if [[ -n "$branch" ]]; then
    if _aikore_git "$dir" show-ref --verify --quiet "refs/heads/$branch"; then
      if ! _aikore_git "$dir" checkout -q "$branch" --; then
        aikore_warn "cannot switch $dir to $branch (local changes?); keeping the current checkout"
        return 0
      fi
    elif ! _aikore_git "$dir" checkout -q -b "$branch" --track "origin/$branch"; then
      aikore_warn "cannot switch $dir to $branch (local changes?); keeping the current checkout"
      return 0
    fi
    if ! _aikore_git "$dir" merge -q --ff-only "origin/$branch"; then
      aikore_warn "cannot fast-forward $dir to origin/$branch (local commits or changes?); keeping it as it is"
    fi
    head=$(_aikore_git "$dir" rev-parse --short HEAD)
    aikore_log "$dir is on $branch at $head"
  else
    if ! _aikore_git "$dir" checkout -q --detach "$ref" --; then
      aikore_warn "cannot check out '$ref' in $dir (unknown ref or local changes?); keeping the current checkout"
      return 0
    fi
    head=$(_aikore_git "$dir" rev-parse --short HEAD)
    aikore_log "$dir is at $ref ($head)"
  fi
}

# aikore_git_sync URL DIR [REF] : clone URL into DIR if it is not a checkout
# yet, else fetch and update it; REF is a branch, tag or commit (default: the
# remote's default branch). Offline, an existing checkout is kept as it is
# (warning); with no checkout at all, the script dies.
aikore_git_sync() {
  local url=${1:?aikore_git_sync: URL required} dir=${2:?aikore_git_sync: DIR required} ref=${3:-}
  local current_url
  if aikore_is_satellite; then
    [[ -e "$dir/.git" ]] ||
      aikore_die "this satellite runs the code in $dir of ${AIKORE_PARENT_NAME:-its parent}, which is not there yet: start the parent once"
    aikore_log "Satellite: running the parent's checkout $dir as it is"
    return 0
  fi
  command -v git >/dev/null 2>&1 || aikore_die "git is not installed"

  if [[ ! -e "$dir/.git" ]]; then
    if [[ -d "$dir" && -n "$(ls -A -- "$dir")" ]]; then
      aikore_die "$dir exists, is not empty and is not a git checkout; move it away or delete it"
    fi
    aikore_log "Cloning $url into $dir"
    mkdir -p -- "$(dirname -- "$dir")"
    if ! GIT_TERMINAL_PROMPT=0 git clone --quiet -- "$url" "$dir"; then
      aikore_die "cannot clone $url (offline?) and there is no existing checkout in $dir"
    fi
  else
    current_url=$(_aikore_git "$dir" remote get-url origin 2>/dev/null || true)
    if [[ "$current_url" != "$url" ]]; then
      aikore_log "Setting the origin of $dir to $url"
      _aikore_git "$dir" remote remove origin >/dev/null 2>&1 || true
      _aikore_git "$dir" remote add origin "$url"
    fi
    aikore_log "Fetching updates for $dir"
    if ! _aikore_git "$dir" fetch --quiet --tags --force origin; then
      aikore_warn "cannot reach $url (offline?); keeping the existing checkout of $dir"
      return 0
    fi
  fi
  _aikore_git_checkout "$dir" "$ref"
}

# aikore_git_submodules DIR : check out the submodules of checkout DIR at the
# commits it records (recursively); offline, the existing ones are kept
# (warning). For apps cloned with --recursive upstream (kohya_ss: sd-scripts).
aikore_git_submodules() {
  local dir=${1:?aikore_git_submodules: DIR required}
  [[ -f "$dir/.gitmodules" ]] || return 0
  aikore_log "Updating the submodules of $dir"
  if ! _aikore_git "$dir" submodule update --init --recursive --quiet; then
    aikore_warn "cannot update the submodules of $dir (offline?); keeping them as they are"
  fi
}

# ---------------------------------------------------------------------------
# Python environments
# ---------------------------------------------------------------------------

# Internal: source FILE with `set -u` off (activation scripts read unset vars).
_aikore_source_lenient() {
  local file=$1 rc=0 had_nounset=0
  if [[ $- == *u* ]]; then had_nounset=1; fi
  set +u
  # shellcheck source=/dev/null
  source "$file" || rc=$?
  if ((had_nounset)); then set -u; fi
  return "$rc"
}

# aikore_venv_create DIR [PYTHON] : create a venv in DIR with PYTHON (default
# python3) unless DIR already holds a working one, then activate it. A broken
# venv (e.g. its base interpreter is gone) is recreated.
aikore_venv_create() {
  local dir=${1:?aikore_venv_create: DIR required} python=${2:-python3}
  if aikore_is_satellite; then
    _aikore_satellite_env "$dir" venv
    return 0
  fi
  _aikore_rebuild_env "$dir"
  if [[ -f "$dir/bin/activate" && -x "$dir/bin/python" ]] && "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
    :
  else
    command -v "$python" >/dev/null 2>&1 || aikore_die "Python interpreter '$python' not found"
    if [[ -e "$dir" ]]; then
      aikore_warn "$dir is not a working venv; recreating it"
    fi
    aikore_log "Creating a Python venv in $dir with $python ($("$python" --version 2>&1))"
    "$python" -m venv --clear "$dir" ||
      aikore_die "cannot create a venv in $dir (on Debian/Ubuntu install the python3-venv package)"
    "$dir/bin/python" -m pip install --quiet --upgrade pip || aikore_warn "cannot upgrade pip (offline?)"
  fi
  _aikore_source_lenient "$dir/bin/activate" || aikore_die "cannot activate the venv in $dir"
  _aikore_rebuild_done
  aikore_apply_pins
  aikore_log "Using $(python --version 2>&1) from $dir"
}

# Internal: print the path of a conda-compatible tool, or return 1.
_aikore_find_conda() {
  local candidate
  for candidate in micromamba mamba conda; do
    if command -v "$candidate" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  for candidate in "${MAMBA_EXE:-}" "${CONDA_EXE:-}" /opt/conda/bin/conda \
    "${HOME:-/root}/miniforge3/bin/conda" "${HOME:-/root}/miniconda3/bin/conda" \
    "${HOME:-/root}/.local/bin/micromamba" /usr/local/bin/micromamba; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# aikore_conda_create DIR [PYTHON_VERSION] : create a conda env (prefix DIR,
# python=PYTHON_VERSION, default 3.11, from conda-forge) with micromamba, mamba
# or conda unless it exists, then activate it; die when no such tool exists.
aikore_conda_create() {
  local dir=${1:?aikore_conda_create: DIR required} pyver=${2:-3.11} tool script
  if aikore_is_satellite; then
    _aikore_satellite_env "$dir" conda
    return 0
  fi
  _aikore_rebuild_env "$dir"
  tool=$(_aikore_find_conda) ||
    aikore_die "this blueprint needs conda, mamba or micromamba and none was found; install Miniforge or micromamba, or use a venv (aikore_venv_create)"
  if [[ ! -d "$dir/conda-meta" ]]; then
    aikore_log "Creating a conda env in $dir (python=$pyver) with $tool"
    "$tool" create --yes --quiet --prefix "$dir" --override-channels --channel conda-forge "python=$pyver" ||
      aikore_die "cannot create the conda env in $dir"
  fi
  # Activation by hand (no shell hook needed): what `conda activate` does for
  # a non-interactive shell, including the env's activate.d scripts.
  export CONDA_PREFIX="$dir" CONDA_DEFAULT_ENV="$dir" CONDA_SHLVL=1
  export PATH="$dir/bin:$PATH"
  unset PYTHONHOME
  if [[ -d "$dir/etc/conda/activate.d" ]]; then
    for script in "$dir"/etc/conda/activate.d/*.sh; do
      if [[ -f "$script" ]]; then
        _aikore_source_lenient "$script" || aikore_warn "activation script $script failed"
      fi
    done
  fi
  hash -r
  _aikore_rebuild_done
  aikore_apply_pins
  aikore_log "Using $(python --version 2>&1) from conda env $dir"
}

# Internal: folder of the install stamps. It lives inside the active env (venv
# or conda), so a deleted or rebuilt env forgets them and reinstalls.
_aikore_stamp_dir() {
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    printf '%s\n' "$VIRTUAL_ENV/.aikore-stamps"
  elif [[ -n "${CONDA_PREFIX:-}" ]]; then
    printf '%s\n' "$CONDA_PREFIX/.aikore-stamps"
  else
    printf '%s\n' "${INSTANCE_DIR:-$PWD}/.aikore-stamps"
  fi
}

# aikore_pip_install_requirements [--force] FILE [PIP_ARGS...] : pip install -r
# FILE into the active env, skipped when FILE (and PIP_ARGS) have the same
# sha256 as at the last successful install (stamp in <env>/.aikore-stamps/), so
# restarts are fast. pip runs in FILE's folder (for lines such as `-e .`).
# Sets AIKORE_PIP_RAN=1 when pip ran, 0 when it was skipped.
aikore_pip_install_requirements() {
  local force=0 file dir abs sum key stamp stamp_dir
  if [[ "${1:-}" == "--force" ]]; then
    force=1
    shift
  fi
  file=${1:?aikore_pip_install_requirements: FILE required}
  shift
  # shellcheck disable=SC2034 # read by blueprints after the call
  AIKORE_PIP_RAN=0
  if aikore_is_satellite; then
    aikore_log "Satellite: the parent's environment is used as it is (no install from $file)"
    return 0
  fi
  [[ -f "$file" ]] || aikore_die "requirements file not found: $file"
  if [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" ]]; then
    aikore_warn "no venv or conda env is active; pip installs into $(command -v python || echo '?')"
  fi
  dir=$(cd -- "$(dirname -- "$file")" && pwd -P)
  abs="$dir/$(basename -- "$file")"
  sum=$({ cat -- "$abs" && printf '\n# pip args: %s\n' "$*"; } | sha256sum)
  sum=${sum%% *}
  key=$(printf '%s' "$abs" | sha256sum)
  key=${key:0:16}
  stamp_dir=$(_aikore_stamp_dir)
  stamp="$stamp_dir/$(basename -- "$abs").$key.sha256"
  if ((!force)) && [[ -f "$stamp" && "$(<"$stamp")" == "$sum" ]]; then
    aikore_log "Requirements unchanged since the last install: $file"
    return 0
  fi
  aikore_log "Installing requirements from $file"
  rm -f -- "$stamp"
  (cd -- "$dir" && python -m pip install -r "$abs" "$@") || aikore_die "pip install -r $file failed"
  mkdir -p -- "$stamp_dir"
  printf '%s\n' "$sum" >"$stamp"
  # shellcheck disable=SC2034 # read by blueprints after the call
  AIKORE_PIP_RAN=1
}

# ---------------------------------------------------------------------------
# Shared folders
# ---------------------------------------------------------------------------

# Internal: move every entry of folder SRC into folder DEST. Sub-folders that
# exist on both sides are merged, identical files are dropped from SRC, and
# anything else that clashes goes to CONFLICTS (never overwritten, never lost).
_aikore_merge_dir() {
  local src=$1 dest=$2 conflicts=$3 entry name target n
  mkdir -p -- "$dest"
  while IFS= read -r -d '' entry; do
    name=${entry##*/}
    if [[ ! -e "$dest/$name" && ! -L "$dest/$name" ]]; then
      mv -- "$entry" "$dest/$name"
    elif [[ -d "$entry" && ! -L "$entry" && -d "$dest/$name" ]]; then
      _aikore_merge_dir "$entry" "$dest/$name" "$conflicts/$name"
      rmdir -- "$entry" 2>/dev/null || true
    elif [[ -f "$entry" && -f "$dest/$name" ]] && command -v cmp >/dev/null 2>&1 &&
      cmp -s -- "$entry" "$dest/$name"; then
      rm -f -- "$entry"
    else
      mkdir -p -- "$conflicts"
      target="$conflicts/$name"
      n=1
      while [[ -e "$target" || -L "$target" ]]; do
        target="$conflicts/$name.$n"
        n=$((n + 1))
      done
      aikore_warn "$dest/$name already exists with other content; the instance's copy is kept as $target"
      mv -- "$entry" "$target"
    fi
  done < <(find "$src" -mindepth 1 -maxdepth 1 -print0)
}

# aikore_link_dir LINK TARGET : make LINK a symlink to folder TARGET (created
# if missing). A real folder at LINK has its content moved into TARGET first
# (clashes go to <instance>/link-conflicts/<name>/), then becomes the link.
aikore_link_dir() {
  local link=${1:?aikore_link_dir: LINK required} target=${2:?aikore_link_dir: TARGET required}
  [[ "$target" == /* ]] || target="$PWD/$target"
  if aikore_is_satellite; then
    mkdir -p -- "$target"
    [[ -L "$link" && "$(readlink -- "$link")" == "$target" ]] ||
      aikore_warn "Satellite: $link is not linked to $target; the parent's folder is left as it is"
    return 0
  fi
  mkdir -p -- "$target"
  if [[ -L "$link" ]]; then
    if [[ "$(readlink -- "$link")" == "$target" ]]; then
      return 0
    fi
    rm -f -- "$link"
  elif [[ -d "$link" ]]; then
    if [[ -n "$(ls -A -- "$link")" ]]; then
      aikore_log "Moving the content of $link into $target"
      _aikore_merge_dir "$link" "$target" "${INSTANCE_DIR:-$PWD}/link-conflicts/${link##*/}"
    fi
    rmdir -- "$link" || aikore_die "cannot replace $link with a link to $target (it is still not empty)"
  elif [[ -e "$link" ]]; then
    aikore_die "$link exists and is not a folder; move it away"
  fi
  mkdir -p -- "$(dirname -- "$link")"
  ln -s -- "$target" "$link"
  aikore_log "Linked $link -> $target"
}

# aikore_link_models TARGET_DIR SUBDIR... : for each SUBDIR (checkpoints, loras,
# vae, ...) make TARGET_DIR/SUBDIR a symlink to the shared "$MODELS_DIR/SUBDIR",
# moving any files the app already had there into the shared folder.
aikore_link_models() {
  local target_dir=${1:?aikore_link_models: TARGET_DIR required} models sub
  shift
  [[ -n "${MODELS_DIR:-}" ]] || aikore_die "MODELS_DIR is not set"
  models=$MODELS_DIR
  [[ "$models" == /* ]] || models="$PWD/$models"
  mkdir -p -- "$target_dir"
  for sub in "$@"; do
    if [[ -z "$sub" || "$sub" == /* || "$sub" == *..* ]]; then
      aikore_die "aikore_link_models: invalid model folder name '$sub'"
    fi
    aikore_link_dir "$target_dir/$sub" "$models/$sub"
  done
}

# aikore_rebuild_requested : return 0 if the trigger file "$INSTANCE_DIR/.rebuild"
# exists (and delete it), else 1. To rebuild an instance's environment, create
# that file (`touch "$INSTANCE_DIR/.rebuild"`, or the panel's rebuild action)
# and restart the instance. aikore_venv_create and the conda helper honour it
# themselves; this is for a blueprint that builds some other environment:
#   if aikore_rebuild_requested; then rm -rf -- "${MY_ENV_DIR:?}"; fi
aikore_rebuild_requested() {
  local flag="${INSTANCE_DIR:-$PWD}/.rebuild"
  if aikore_is_satellite; then
    return 1 # the parent's marker is for the parent's own next start
  fi
  if [[ -e "$flag" ]]; then
    rm -f -- "$flag"
    aikore_warn "rebuild requested ($flag): the environment will be recreated"
    return 0
  fi
  return 1
}

# Sourcing this file applies the instance's package pins (see aikore_apply_pins).
aikore_apply_pins
