"""Advancing a run one durable step at a time (replay what is recorded, run the rest once)."""
