"""Analyses over stored samples: calibration, stderr, pass@k, paired statistics."""
