"""Shared core of arcsynth: data models, loaders, prompts, scoring, settings and the Celery app."""
