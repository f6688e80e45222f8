"""encdec flax backend (being built)."""
