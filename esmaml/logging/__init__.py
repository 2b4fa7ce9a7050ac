"""Where runs report: metrics.jsonl, the console, and Weights & Biases."""

from esmaml.logging.metrics import MetricsWriter, read_metrics

__all__ = ["MetricsWriter", "read_metrics"]
