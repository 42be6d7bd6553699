"""Backbones and networks."""
