"""Evaluation: answer held-out records and score them per category."""
