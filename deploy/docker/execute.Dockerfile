# Execute worker: CPU only, slim. docker build -f deploy/docker/execute.Dockerfile -t arcsynth-execute .
FROM python:3.11-slim
WORKDIR /opt/arcsynth
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY workers ./workers
RUN pip install --no-cache-dir ".[execute]" && useradd --create-home arcsynth
USER arcsynth
ENTRYPOINT ["arcsynth"]
CMD ["worker", "execute"]
