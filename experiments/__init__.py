"""Experiments: data, metrics, training and decoding for the paper's table-to-text runs."""
