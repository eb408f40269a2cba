# llmnode image: `llmnode start` in a container.
#
#   docker build -t llmnode:cpu .                                   # CPU (python:3.11-slim)
#   docker build -t llmnode:gpu --build-arg VARIANT=gpu .           # NVIDIA (CUDA 12 + cuDNN 9)
#   docker build -t llmnode:cpu --build-arg MODELS= .               # no models baked in
#
# Stages: base-cpu | base-gpu (the Python to run on) -> build (a venv in /opt/venv, the models
# pulled into /opt/llmnode/models) -> runtime (the venv, the models, examples/ and docker/, a
# non-root user). docker-compose.yml runs three of these as a demo mesh.

ARG VARIANT=cpu

# ---- bases: the same Python in the build and the runtime stage (the venv links to it) --------

FROM python:3.11-slim AS base-cpu
ENV ORT_PACKAGE="onnxruntime>=1.18,<2"

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
# Ubuntu 24.04's Python is 3.12 (llmnode needs >= 3.11); onnxruntime-gpu 1.2x wants CUDA 12 and
# cuDNN 9, which this base provides.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV ORT_PACKAGE="onnxruntime-gpu>=1.18,<2"

# ---- build ------------------------------------------------------------------------------------

FROM base-${VARIANT} AS build
ARG TORCH_VERSION=2.13.0
# PyTorch only exports models to ONNX (inference runs in ONNX Runtime), so both variants take the
# small CPU build, never the multi-GB CUDA one.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG MODELS="smollm2-135m-instruct all-minilm-l6-v2"
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LLMNODE_MODEL_STORE=/opt/llmnode/models
RUN python3 -m venv /opt/venv && pip install --upgrade pip
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmnode ./llmnode
# ONNX Runtime: exactly one of `onnxruntime` (CPU) and `onnxruntime-gpu` may be installed; both
# provide the same `onnxruntime` module and, installed together, overwrite each other's files.
# pyproject.toml asks for onnxruntime-gpu on Linux x86_64 (it runs on CPU too, and it is what a
# GPU machine needs), so a plain `pip install .` would put the GPU build in the CPU image. Hence:
# install every dependency from pyproject.toml except onnxruntime* (and torch, installed above
# from the CPU index), plus the one ONNX Runtime this variant wants ($ORT_PACKAGE), then llmnode
# itself with --no-deps, and check that exactly one ONNX Runtime distribution is present.
# (`pip check` would flag the missing onnxruntime-gpu requirement in the CPU image; that is the
# point, so it is not run.)
# The image pulls (exports) its models at build time, so it takes the `export` extra too, and
# ONNX Runtime GenAI's model builder --no-deps (it would pull plain onnxruntime).
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; deps = project['dependencies'] + project['optional-dependencies']['export']; print('\n'.join(d for d in deps if not d.startswith(('onnxruntime', 'torch'))))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "${ORT_PACKAGE}" \
    && pip install --no-deps . "onnxruntime-genai==0.11.4" \
    && test "$(pip list --format=freeze | grep -ci '^onnxruntime\(-gpu\)\?==')" = 1 \
    && python -c "import onnxruntime, llmnode.cli.main; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"

# The default models, exported to ONNX at build time so a container starts serving at once.
RUN mkdir -p "${LLMNODE_MODEL_STORE}" \
    && for model in ${MODELS}; do llmnode models pull "${model}" || exit 1; done

# ---- runtime ----------------------------------------------------------------------------------

FROM base-${VARIANT} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin llmnode \
    && mkdir -p /data \
    && chown llmnode:llmnode /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=llmnode:llmnode /opt/llmnode/models /opt/llmnode/models
WORKDIR /app
COPY --chown=llmnode:llmnode examples ./examples
COPY --chown=llmnode:llmnode docker ./docker
# PYTHONPATH=/app: `--agent examples.qa_pipeline:Writer` and the client app import from here.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    LLMNODE_DATA_DIR=/data \
    LLMNODE_MODEL_STORE=/opt/llmnode/models
USER llmnode
VOLUME ["/data"]
# 7946/tcp: the mesh (zmq); 7947/udp: zero-config LAN beacons.
EXPOSE 7946/tcp 7947/udp
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["llmnode", "status"]
ENTRYPOINT ["llmnode"]
CMD ["start"]
