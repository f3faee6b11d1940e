"""Embedding backends behind one small protocol (see `base`)."""
