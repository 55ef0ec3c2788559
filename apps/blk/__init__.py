"""Block clients."""
