"""encdec tf backend (being built)."""
