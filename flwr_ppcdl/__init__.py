"""flwr_ppcdl: private (functional mechanism) and robust (reliability-weighted) federated learning for Flower."""

__version__ = "0.1.0"
