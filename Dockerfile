# One image for every stationflow process (ingest, worker, produce, console); `dashboard` adds rq-dashboard.
FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY parsers parsers
COPY store store
COPY ingest ingest
COPY workers workers
COPY stationflow stationflow
COPY bench bench
RUN pip install '.[console]' && useradd --system --uid 10001 --no-create-home stationflow
USER stationflow
CMD ["stationflow", "--help"]

# rq-dashboard 0.9.0 declares rq>=1.0 and works with rq 3.0 when started with --json
# (our jobs use the JSON serializer); it imports `six` without declaring it.
FROM app AS dashboard
USER root
RUN pip install rq-dashboard==0.9.0 six
USER stationflow
CMD ["rq-dashboard", "--json"]
