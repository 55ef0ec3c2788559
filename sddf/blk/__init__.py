"""Block device class: queues and storage info (include/sddf/blk/)."""
