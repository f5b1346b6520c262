# Inference worker: vLLM on CUDA (the official vLLM image carries CUDA, torch and vllm).
# docker build -f deploy/docker/inference.Dockerfile -t arcsynth-inference .
FROM vllm/vllm-openai:v0.8.5
WORKDIR /opt/arcsynth
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY workers ./workers
RUN pip install --no-cache-dir ".[inference]" && useradd --create-home arcsynth
USER arcsynth
ENTRYPOINT ["arcsynth"]
CMD ["worker", "inference"]
