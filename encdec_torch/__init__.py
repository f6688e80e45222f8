"""encdec torch backend (being built)."""
