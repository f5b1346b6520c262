# Execute worker: CPU only, slim. docker build -f deploy/docker/execute.Dockerfile -t arcsynth-execute .
FROM python:3.11-slim
WORKDIR /opt/arcsynth
COPY pyproject.toml deploy/docker/worker_requirements.py ./
RUN python worker_requirements.py execute > requirements.txt && pip install --no-cache-dir -r requirements.txt \
    && useradd --create-home --uid 10001 arcsynth && mkdir -p /artifacts && chown arcsynth:arcsynth /artifacts
# Only the workers' code and what they share with the producer, as the `arcsynth` namespace.
COPY common ./arcsynth/common
COPY workers ./arcsynth/workers
ENV PYTHONPATH=/opt/arcsynth
USER arcsynth
ENTRYPOINT ["python", "-m", "arcsynth.workers"]
CMD ["worker", "execute"]
