"""Evaluation: task metrics, membership inference and the plots of both."""
