"""pysddf: the seL4 Device Driver Framework and Microkit system model on host processes."""

__version__ = "0.1.0"
