"""mrfbench: train, sweep and compare multimodal VAEs."""

__version__ = "0.1.0"
