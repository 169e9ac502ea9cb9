"""Day-to-day operations on running nodes: their BMCs over IPMI (power, console, sensors)."""
