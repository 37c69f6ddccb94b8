"""The MLflow registry: tracking runs, model versions, aliases and compliance tags."""
