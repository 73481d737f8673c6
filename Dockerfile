# fmsearch for docker-compose.yml: the package, its CLI, and Fashion-MNIST from Debian.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && (apt-get install -y --no-install-recommends dataset-fashion-mnist \
        || echo "no dataset-fashion-mnist package: fmsearch will download the data") \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.py README.md ./
COPY search ./search
COPY spaces ./spaces
COPY runners ./runners
RUN pip install --no-cache-dir .
WORKDIR /work
CMD ["fmsearch", "--help"]
