#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages AiKore needs, only those missing. Safe to run twice.
# Used by `make setup` on a bare host and by the Dockerfile.
set -euo pipefail

packages=()
need() { # need COMMAND PACKAGE: add PACKAGE when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 || packages+=("$2")
}
need python3 python3
need git git
need curl curl
need shellcheck shellcheck
need socat socat                                    # public ports
[ -x /usr/sbin/nginx ] || need nginx nginx          # the reverse proxy (in /usr/sbin: not on a user's PATH)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
# persistent desktops (app/services/runtime/desktop.py): a virtual display, a window manager, an
# X cookie tool and the kiosk browser; Selkies itself comes from PyPI (pyproject.toml)
need Xvfb xvfb
need openbox openbox
need xauth xauth
need xrandr x11-xserver-utils                 # Selkies' fallback when it resizes the screen
need chromium chromium
if [ "${1:-}" = "--test" ]; then # what only the test suite needs:
  # chromium (above) is also the end-to-end tests' real browser
  # the container tests: build and run the image with podman (no docker daemon), the base image
  # made with debootstrap from Debian's own packages (tests/container_kit.py)
  need podman podman
  need buildah buildah
  need runc runc
  need fuse-overlayfs fuse-overlayfs
  need newuidmap uidmap
  need slirp4netns slirp4netns
  [ -x /usr/sbin/debootstrap ] || need debootstrap debootstrap
  # the Slurm executor's tests: a real controller and two node daemons (tests/slurm_kit.py)
  [ -x /usr/sbin/slurmctld ] || need slurmctld slurm-wlm
  [ -x /usr/sbin/munged ] || need munged munge
fi

if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing system packages: ${packages[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "Run as root or install: ${packages[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
# AiKore runs its own nginx master; the distribution's service that the package just started
# (a default site on port 80) is not needed.
if [[ " ${packages[*]} " == *" nginx "* ]] && [ -d /run/systemd/system ]; then
  echo "Disabling the distribution's nginx service (AiKore starts its own nginx)"
  "${sudo[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
fi
