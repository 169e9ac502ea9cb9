"""TFTP packet codec and session state (pure twin of _tftp)."""
