"""A module whose import never finishes (a swap must give up on it in bounded time)."""
import time

time.sleep(3600)
