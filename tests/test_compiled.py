"""The compiled twins must load: a silent fallback to pure Python would hide a broken build."""
import importlib

import pytest

from wwfast._impl import pure_forced

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)


@pytest.mark.parametrize("facade", ["wwfast.cpio", "wwfast.tftp"])
def test_compiled_module_loaded(facade):
    module = importlib.import_module(facade)
    if pure_forced():
        assert module.COMPILED is False
    else:
        assert module.COMPILED is True, f"{facade} fell back to its pure twin: the Cython build did not load"
