# syntax=docker/dockerfile:1
# Images of the patchcore workers and producer: one image per accelerator, the role is the command.
#
#   docker build --target cpu -t patchcore-cpu:0.1.0 .   ONNX Runtime on the CPU (index worker, producer, CPU pools)
#   docker build --target gpu -t patchcore-gpu:0.1.0 .   + @tensorflow/tfjs-node-gpu on CUDA 11.2 / cuDNN 8.1
#
#   docker run ... patchcore-cpu:0.1.0 worker index         (also: worker features|score, submit, ingest, status, ...)
#
# The tag is package.json's version (test/deploy checks that the manifests use it). Sources are TypeScript run
# through tsx (a dependency), so there is no build step: a stage installs the production dependencies with
# their native parts, the final stage adds the sources and a non-root user. The ResNet-50 weights are not in the
# image (their licence): mount the file and point PATCHCORE_WEIGHTS at it (docs/deploy.md).
#
# Install scripts: `npm ci --ignore-scripts`, then `npm rebuild` of exactly the packages each image needs.
# npm 11 checks every one against package.json#allowScripts, so nothing outside that list runs. Both images skip
# @tensorflow/tfjs-node (the CPU image runs the ONNX engine, the GPU image its own TensorFlow); the GPU image
# runs @tensorflow/tfjs-node-gpu's script, which downloads libtensorflow 2.9 (GPU) at build time.

# ---------------------------------------------------------------------------------------------------------------
# Node.js itself; the GPU stages copy it onto the CUDA base.
FROM node:20.20.2-bookworm-slim AS node

# ---------------------------------------------------------------------------------------------------------------
FROM node AS deps-cpu
ARG NPM_VERSION=11.19.1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# allowScripts needs npm 11 (Node 20 ships npm 10).
RUN npm install -g npm@${NPM_VERSION}
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild --foreground-scripts hnswlib-node esbuild msgpackr-extract \
 && rm -rf node_modules/@tensorflow/tfjs-node node_modules/@tensorflow/tfjs-node-gpu \
 && npm cache clean --force

# ---------------------------------------------------------------------------------------------------------------
FROM node:20.20.2-bookworm-slim AS cpu
RUN groupadd --gid 10001 patchcore \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin patchcore \
 && mkdir -p /var/cache/patchcore/models /var/lib/patchcore /models \
 && chown -R 10001:10001 /var/cache/patchcore /var/lib/patchcore
ENV NODE_ENV=production \
    HOME=/tmp \
    MODEL_CACHE_DIR=/var/cache/patchcore/models
WORKDIR /app
COPY --from=deps-cpu /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY cli ./cli
COPY services ./services
COPY shared ./shared
USER 10001:10001
ENTRYPOINT ["node", "bin/patchcore.js"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------------------------
# CUDA 11.2 with cuDNN 8.1 is what @tensorflow/tfjs-node-gpu 4.x (libtensorflow 2.9.1) is built against. The
# dependencies are built on the same Ubuntu as the final image, so native modules link against its glibc and
# libstdc++ (the Debian node image has newer ones).
FROM nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04 AS deps-gpu
ARG NPM_VERSION=11.19.1
# Only Ubuntu's archive is needed here; old CUDA images may carry an expired key for NVIDIA's apt repository.
RUN rm -f /etc/apt/sources.list.d/cuda*.list /etc/apt/sources.list.d/nvidia-ml*.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && npm install -g npm@${NPM_VERSION}
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild --foreground-scripts hnswlib-node esbuild msgpackr-extract @tensorflow/tfjs-node-gpu \
 && rm -rf node_modules/@tensorflow/tfjs-node \
 && ls node_modules/@tensorflow/tfjs-node-gpu/lib/napi-v*/tfjs_binding.node node_modules/@tensorflow/tfjs-node-gpu/deps/lib/libtensorflow.so* \
 && npm cache clean --force

# ---------------------------------------------------------------------------------------------------------------
FROM nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04 AS gpu
RUN groupadd --gid 10001 patchcore \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin patchcore \
 && mkdir -p /var/cache/patchcore/models /var/lib/patchcore /models \
 && chown -R 10001:10001 /var/cache/patchcore /var/lib/patchcore
COPY --from=node /usr/local/bin/node /usr/local/bin/node
# CUDA_CACHE_PATH: kernels JIT-compiled for GPUs newer than libtensorflow's build (e.g. Hopper) are cached
# there; the root filesystem is read-only in Kubernetes, /tmp is a volume.
ENV NODE_ENV=production \
    HOME=/tmp \
    MODEL_CACHE_DIR=/var/cache/patchcore/models \
    CUDA_CACHE_PATH=/tmp/cuda-cache \
    CUDA_CACHE_MAXSIZE=2147483648 \
    TF_CPP_MIN_LOG_LEVEL=1
WORKDIR /app
COPY --from=deps-gpu /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY cli ./cli
COPY services ./services
COPY shared ./shared
USER 10001:10001
ENTRYPOINT ["node", "bin/patchcore.js"]
CMD ["--help"]
