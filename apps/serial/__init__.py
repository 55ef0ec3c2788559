"""Serial clients."""
