"""Particle detection methods, one folder each (density, log), and shared peak extraction."""
