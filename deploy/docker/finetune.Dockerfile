# Fine-tune worker: CUDA torch plus unsloth/TRL (peft is the fallback when unsloth cannot load).
# docker build -f deploy/docker/finetune.Dockerfile -t arcsynth-finetune .
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /opt/arcsynth
COPY pyproject.toml deploy/docker/worker_requirements.py ./
RUN python worker_requirements.py finetune finetune-gpu > requirements.txt && pip install --no-cache-dir -r requirements.txt \
    && useradd --create-home --uid 10001 arcsynth && mkdir -p /artifacts && chown arcsynth:arcsynth /artifacts
# Only the workers' code and what they share with the producer, as the `arcsynth` namespace.
COPY common ./arcsynth/common
COPY workers ./arcsynth/workers
ENV PYTHONPATH=/opt/arcsynth
USER arcsynth
ENTRYPOINT ["python", "-m", "arcsynth.workers"]
CMD ["worker", "finetune"]
