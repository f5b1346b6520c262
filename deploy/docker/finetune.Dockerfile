# Fine-tune worker: CUDA torch plus unsloth/TRL (peft is the fallback when unsloth cannot load).
# docker build -f deploy/docker/finetune.Dockerfile -t arcsynth-finetune .
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /opt/arcsynth
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY workers ./workers
RUN pip install --no-cache-dir ".[finetune,finetune-gpu]" && useradd --create-home arcsynth
USER arcsynth
ENTRYPOINT ["arcsynth"]
CMD ["worker", "finetune"]
