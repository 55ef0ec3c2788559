"""The block virtualiser."""
