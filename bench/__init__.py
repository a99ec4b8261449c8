"""bench: a benchmark harness for modality-imbalance methods in multimodal sentiment analysis."""

__version__ = "0.1.0"
