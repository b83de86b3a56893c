"""Low-level ops shared by methods."""
