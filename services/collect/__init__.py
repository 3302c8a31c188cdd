"""cookline."""
