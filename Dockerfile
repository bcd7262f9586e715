# The mantis-stream worker: slim, non-root, health-checked on /health (readiness: 503 without a broker or partitions).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MANTIS_WEB_HOST=0.0.0.0 MANTIS_WEB_PORT=6066 \
    MANTIS_SAMPLING_STRATEGIES=/app/config/sampling-strategy.json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mantis_stream ./mantis_stream
COPY config ./config
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /app mantis \
 && chown -R mantis /app
USER mantis
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
  CMD python -c "exec('import sys, urllib.request as u\ntry: sys.exit(u.urlopen(\'http://127.0.0.1:6066/health\', timeout=2).status != 200)\nexcept OSError as e: sys.exit(f\'unhealthy: {e}\')')"
ENTRYPOINT ["mantis-stream"]
CMD ["worker", "-l", "info"]
