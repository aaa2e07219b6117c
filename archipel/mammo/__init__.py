"""Screening mammography: episodes, double-reading protocols, worklists, decisions, outcomes, metrics."""
