"""Andon: equipment reliability, OEE and JIT-readiness monitoring for Just-in-Time production lines."""

__version__ = "0.1.0"
