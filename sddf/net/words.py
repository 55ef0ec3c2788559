"""What the net virtualisers' ledger words say (:mod:`sddf.ledger`): one word per buffer of a pool.

virt_rx keeps one per rx buffer: a bit per client holding it (bit ``i`` for client ``i``), or
``RX_PENDING`` while it waits for room on the driver's free queue, or 0 (with the driver, or in
virt_rx's hands within a handler). virt_tx keeps one per client tx buffer, numbered client by
client: where it is.
"""
RX_PENDING = 1 << 63
TX_WITH_CLIENT, TX_AT_DRIVER, TX_RETURNING = 0, 1, 2
