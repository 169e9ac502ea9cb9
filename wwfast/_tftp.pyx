# cython: language_level=3
"""TFTP packet codec and session state (compiled twin of _tftp_py)."""
