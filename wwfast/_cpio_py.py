"""newc cpio writer (pure-Python twin of _cpio). Filled by the image issue."""
