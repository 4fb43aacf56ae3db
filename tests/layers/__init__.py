"""Malicious and broken layer tars, built in memory by ``corpus.py``."""
