"""Worker processes for the cross-process tests, and the parent side that starts them.

A worker is a separate Python process started with ``subprocess`` (never a fork of pytest):
``python -m xproc MODULE.FUNCTION JSON`` calls ``xproc.MODULE.FUNCTION(params)`` and prints
its result as one JSON line. It inherits only the fds named in its ``pass_fds``.
"""
