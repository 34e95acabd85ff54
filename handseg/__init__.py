"""Shared core of the hand-bone segmentation project: classes, data format, metrics, models and inference."""

__version__ = "0.1.0"
