"""Serial drivers."""
