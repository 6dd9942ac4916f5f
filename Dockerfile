# AiKore in one container: nginx, the panel and every WebUI instance, supervised by supervisord
# under tini. Build: `docker build -t aikore .` (or `docker compose build`); run: see compose.yaml.
#
# Layers go from the least to the most often changed: system packages, the panel's Python
# dependencies (from pyproject.toml alone), the container scripts, then the code, so a code change
# rebuilds only the last two small layers.
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="AiKore" \
      org.opencontainers.image.description="Self-hosted control panel for AI WebUIs on GPU servers: create, run, supervise and proxy many instances" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# System packages. No CUDA toolkit: blueprints bring their own torch wheels and the NVIDIA
# container runtime injects the driver.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl git nginx socat procps tini \
      python3 python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/nginx/sites-enabled/default

# Persistent desktops, in a layer of their own: a virtual display, a window manager, the X
# cookie tool and the kiosk browser (Selkies, the streamer, gets a venv of its own below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends xvfb openbox xauth x11-xserver-utils chromium fonts-dejavu-core \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# The account the panel runs as; the entrypoint adapts it to PUID/PGID at start.
RUN groupadd -g 1000 aikore \
 && useradd -u 1000 -g aikore -M -d /config/home -s /bin/bash aikore

# The panel's dependencies in a venv of their own (not on PATH: instances must not pip-install
# into it). Read from pyproject.toml only, so this layer survives code changes.
# PIP_CERT: a CA bundle lent to the build by a TLS-intercepting proxy's machine
# (`--volume <bundle>:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt`); empty by default.
ARG PIP_CERT=
# Selkies in a venv of its own (AIKORE_SELKIES): its ~20 dependencies stay out of the panel's.
COPY container/selkies.txt /opt/aikore/selkies.txt
RUN python3 -m venv /opt/aikore/selkies \
 && /opt/aikore/selkies/bin/pip ${PIP_CERT:+--cert "$PIP_CERT"} install --no-cache-dir --disable-pip-version-check \
      -r /opt/aikore/selkies.txt

COPY pyproject.toml /opt/aikore/src/pyproject.toml
RUN python3 -m venv /opt/aikore/venv \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/opt/aikore/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/aikore/venv/bin/pip ${PIP_CERT:+--cert "$PIP_CERT"} install --no-cache-dir --disable-pip-version-check \
      -r /tmp/requirements.txt supervisor 'setuptools>=68' wheel \
 && rm /tmp/requirements.txt \
 && ln -s /opt/aikore/venv/bin/supervisord /opt/aikore/venv/bin/supervisorctl /usr/local/bin/

# supervisord's config, the entrypoint and the nginx wrapper.
COPY container/entrypoint.sh container/nginx-run.sh container/supervisord.conf /opt/aikore/container/

# The panel itself (stock blueprints and the nginx template ship inside the package).
COPY README.md /opt/aikore/src/README.md
COPY container/nginx /opt/aikore/src/container/nginx
COPY blueprints /opt/aikore/src/blueprints
COPY app /opt/aikore/src/app
RUN /opt/aikore/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
      /opt/aikore/src \
 && rm -rf /opt/aikore/src \
 && ln -s /opt/aikore/venv/bin/aikore /usr/local/bin/aikore \
 && install -d -o aikore -g aikore -m 0750 /run/aikore

ENV AIKORE_DATA_DIR=/config \
    AIKORE_HOST=0.0.0.0 \
    AIKORE_PORT=9000 \
    AIKORE_PORT_RANGE=9001-9020 \
    AIKORE_NGINX=external \
    AIKORE_HTTPS_PORT=9443 \
    AIKORE_HTTPS_ONLY=1 \
    AIKORE_SELKIES=/opt/aikore/selkies/bin/selkies \
    AIKORE_STOP_ON_EXIT=1 \
    AIKORE_STOP_GRACE=10 \
    PUID=1000 \
    PGID=1000 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video

VOLUME /config
# 9000: the panel and /instance/<slug>/; 9443: HTTPS (AIKORE_HTTPS_PORT); 9001-9020: instances' public ports.
EXPOSE 9000 9443 9001-9020
WORKDIR /
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${AIKORE_PORT}/api/health || exit 1"]

ENTRYPOINT ["/usr/bin/tini", "--", "/opt/aikore/container/entrypoint.sh"]
