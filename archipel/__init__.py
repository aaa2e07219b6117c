"""Archipel: a regional imaging platform for digital pathology and organised screening."""

__version__ = "0.1.0"
