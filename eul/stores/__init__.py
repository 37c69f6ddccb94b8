"""The stores a request passes through: the deletion log, DVC and the MLflow registry."""
