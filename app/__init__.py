"""Sporeprint: from wild photos to an on-device image classifier."""

__version__ = "0.1.0"
