"""Pyramid engine and tile service (level geometry, downsampling, codecs, tile HTTP APIs)."""
