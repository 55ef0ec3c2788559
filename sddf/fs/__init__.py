"""LionsOS file-system class: the fs protocol queues, configs, wiring and client library."""
