"""A module whose import ends the importing process (a swap must not let it end the monitor)."""
import os

os._exit(3)
