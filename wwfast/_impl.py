"""Pick the compiled module or its pure-Python twin, in one place.

`WWFAST_PURE=1` forces the twins (tests run the suite both ways). A compiled
module that fails to import falls back to its twin; `COMPILED` on each facade
says which one is in use, and a test fails when the fallback was silent.
"""
import importlib
import os


def pure_forced():
    return os.environ.get("WWFAST_PURE", "") not in ("", "0")


def pick(compiled_name, pure_name):
    """Return (module, compiled) for the fastest module that imports."""
    if not pure_forced():
        try:
            return importlib.import_module(compiled_name), True
        except ImportError:
            pass
    return importlib.import_module(pure_name), False
