"""Timer device class: the PPC protocol, client calls, configs and wiring."""
