"""The serial virtualisers: virt_tx and virt_rx."""
