# cython: language_level=3
"""newc cpio writer (compiled twin of _cpio_py). Filled by the image issue."""
