"""Block drivers."""
