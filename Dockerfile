# syntax=docker/dockerfile:1
# CPU image of the real-time server:  docker build -t avatar .   (from the repository root)
#   docker run --rm -e AVATAR_SECRET=... -p 8080:8080 -p 40000-40099:40000-40099/udp avatar \
#     serve --host 0.0.0.0 --port 8080 --set server.udp_ports=[40000,40099] \
#     --set server.ice_public_ip=PUBLIC_IP
# deploy/docker-compose.yml and deploy/k8s/ run it with TURN; tests/test_deploy.py keeps the port,
# the UDP range and the command the same in all three.
#
# The models, the configs and the web client ship inside the package (avatar/weights,
# avatar/avatars, avatar/configs, avatar/web): nothing is downloaded at run time, and the installed
# package serves its own pages. The wheels (onnxruntime, opencv-python-headless, av) bring their own
# libraries; the runtime stage adds only festival and its voices, the local text-to-speech of
# render jobs and `avatar render --text` (avatar/data/tts.py). Pin the base by digest for
# reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim

# -- build: install the project into a virtual environment ---------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# README.md is the package's long description (pyproject `readme`); setuptools needs it.
COPY pyproject.toml README.md ./
COPY avatar ./avatar
# [s3]: boto3, for render results in S3 (renders.store = s3://bucket)
RUN /opt/venv/bin/pip install '.[s3]'

# -- runtime: the environment only; no source tree, no build tools ---------------------------------
FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin avatar
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends festival \
        festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# HOME and MPLCONFIGDIR point at /tmp so the image runs with a read-only root file system.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
# Numeric user: Kubernetes' runAsNonRoot can only verify a numeric UID.
USER 10001:10001

# HTTP (signalling, web client, /healthz /readyz /metrics) and the pinned ICE (media) range.
EXPOSE 8080/tcp
EXPOSE 40000-40099/udp
# slim has no curl; the port is the one in CMD.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# SIGTERM drains sessions for up to server.drain_s (30 s): give `docker stop` -t 45 or more.
STOPSIGNAL SIGTERM

ENTRYPOINT ["avatar"]
# Binding 0.0.0.0 needs AVATAR_SECRET in the environment (HMAC key of `avatar token`).
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", \
     "--set", "server.udp_ports=[40000,40099]"]
