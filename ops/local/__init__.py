"""Processes the operator tools start on this machine: a private Redis, workers, Flower."""
