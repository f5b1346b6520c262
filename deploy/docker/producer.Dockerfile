# Producer and Flower: the core package only. docker build -f deploy/docker/producer.Dockerfile -t arcsynth-producer .
FROM python:3.11-slim
WORKDIR /opt/arcsynth
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY workers ./workers
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 arcsynth \
    && mkdir -p /artifacts runs && chown arcsynth:arcsynth /artifacts runs
USER arcsynth
ENTRYPOINT ["arcsynth"]
CMD ["runs"]
