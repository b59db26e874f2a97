# syntax=docker/dockerfile:1
#
# Sporeprint server-mode images. Targets:
#   static  node: builds static/vendor (htmx) from package-lock.json
#   base    python:3.11-slim + app, non-root; the web image and the io worker's image
#   web     base + CMD web
#   gpu     python:3.11-slim + app + the `ml` extra (TensorFlow with its CUDA wheels)
# docker-compose.yml builds `web` and `gpu`; by hand: docker build --target web -t sporeprint-web .

# ---- front-end assets ------------------------------------------------------------------------
FROM node:20-slim AS static
WORKDIR /build
# Lockfile first: the npm ci layer stays cached until dependencies change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY scripts/ scripts/
RUN npm run vendor

# ---- requirement lists from pyproject.toml -----------------------------------------------------
# Written as plain files so that the dependency layers below are keyed on the dependency lists
# alone: a version bump or any other pyproject edit that leaves them alone keeps the cache.
FROM python:3.11-slim AS reqs
WORKDIR /reqs
COPY pyproject.toml ./
RUN python -c "import tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
base = p.get('dependencies', []); \
ml = p.get('optional-dependencies', {}).get('ml', []); \
open('base.txt', 'w').write('\n'.join(base) + '\n'); \
open('gpu.txt', 'w').write('\n'.join(base + ml) + '\n')"

# ---- the source tree as it must appear in WORKDIR ----------------------------------------------
# Templates, static files and migrations are found through the working directory at run time
# (app/paths.py), so they sit in /srv/sporeprint beside the package sources pip builds from.
FROM scratch AS src
# README.md* (a glob) so the build neither needs a README nor drops one it has.
COPY pyproject.toml README.md* /src/
COPY app/ /src/app/
COPY workers/ /src/workers/
COPY migrations/ /src/migrations/
COPY templates/ /src/templates/
COPY static/ /src/static/
COPY --from=static /build/static/vendor/ /src/static/vendor/

# ---- shared runtime: interpreter, user, data directory -----------------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A fixed uid/gid, the same in every image: web and all workers share the /data volume.
# /data is created here owned by that user, so an empty named volume mounted on it starts out
# writable (Docker copies the image directory's ownership into a new volume). A bind mount
# instead must be chowned to 10001:10001 on the host.
RUN groupadd --system --gid 10001 sporeprint \
    && useradd --system --uid 10001 --gid sporeprint --create-home --home-dir /home/sporeprint \
       --shell /usr/sbin/nologin sporeprint \
    && mkdir -p /data/weights \
    && chown -R sporeprint:sporeprint /data
WORKDIR /srv/sporeprint

# ---- web / io worker image ---------------------------------------------------------------------
FROM runtime AS base
COPY --from=reqs /reqs/base.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
# Code last: an edit only re-runs this cheap step. Everything stays root-owned (read-only to the
# app user); `pip install .` finds the dependencies already there and only installs the package.
COPY --from=src /src/ ./
RUN pip install . && rm -rf build ./*.egg-info
# Numeric, so that runtimes enforcing non-root (runAsNonRoot) can check it without /etc/passwd.
USER 10001:10001

FROM base AS web
EXPOSE 8000
CMD ["sporeprint", "web", "--host", "0.0.0.0", "--port", "8000"]

# ---- GPU worker image --------------------------------------------------------------------------
# python:3.11-slim rather than tensorflow/tensorflow:*-gpu or nvidia/cuda: TensorFlow's
# tensorflow[and-cuda] wheels ship CUDA, cuDNN and ptxas themselves, so the host needs only the
# NVIDIA driver and the NVIDIA Container Toolkit (which mounts libcuda/libnvidia-ml in). This
# keeps the same interpreter as the web image (recent official TF images carry Ubuntu 22.04's
# Python 3.11.0rc1) and avoids a second, unused copy of the CUDA libraries (several GB).
FROM runtime AS gpu
# compute: CUDA; utility: NVML (the GPU status page) and nvidia-smi.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# The `ml` extra of pyproject.toml carries TensorFlow (tensorflow[and-cuda]). Until that extra
# exists gpu.txt holds only the base dependencies and pip merely warns about the missing extra
# below; the image builds, but has no TensorFlow to train with.
COPY --from=reqs /reqs/gpu.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=src /src/ ./
# hadolint ignore=DL3013
RUN pip install '.[ml]' && rm -rf build ./*.egg-info
USER 10001:10001
CMD ["sporeprint", "worker", "--queues", "gpu"]
