"""Each compiled module and its pure twin expose the same public names, and every public function, class and
method has the same signature (the compiled side read through Cython's `embedsignature`, setup.py)."""
import importlib
import inspect
import types

import pytest

from wwfast._impl import pure_forced

pytestmark = [pytest.mark.twin,
              pytest.mark.skipif(pure_forced(), reason="compares the compiled modules with their twins")]

TWINS = [("wwfast._cpio", "wwfast._cpio_py"), ("wwfast._tftp", "wwfast._tftp_py")]


def public(namespace):
    """Public names of a module or class: no leading underscore, no imported modules."""
    return {n for n, v in vars(namespace).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}


def embedded(obj, module):
    """The signature Cython's embedsignature wrote as the docstring's first line: `Name(args)`."""
    doc = (obj.__doc__ or "").split("\n", 1)[0]
    name = obj.__name__
    assert doc.startswith(name + "(") or doc.split(".")[-1].startswith(name + "("), \
        f"{module.__name__}.{name}: no embedded signature (docstring starts {doc[:60]!r}); was setup.py's " \
        f"embedsignature directive lost?"
    args = doc[doc.index("(") + 1:doc.rindex(")")]
    # evaluated in the module, so a default written as a constant (DEFAULT_BLKSIZE) compares by value
    return inspect.signature(eval(f"lambda {args}: None", dict(vars(module))))


def signature(obj, module, compiled):
    if inspect.isclass(obj):
        return embedded(obj, module) if compiled else inspect.signature(obj)
    try:
        sig = inspect.signature(obj)
    except ValueError:
        return embedded(obj, module)
    if compiled and str(sig) == "(self, /, *args, **kwargs)":
        return embedded(obj, module)
    return sig


def callables(module):
    """{qualified name: object} of the public functions and classes and the classes' public methods."""
    out = {}
    for name in public(module):
        obj = getattr(module, name)
        if inspect.isclass(obj) and obj.__module__ == module.__name__:
            out[name] = obj
            for attr in public(obj):
                if callable(getattr(obj, attr)):
                    out[f"{name}.{attr}"] = getattr(obj, attr)
        elif callable(obj) and not inspect.isclass(obj):
            out[name] = obj
    return out


@pytest.mark.parametrize("compiled_name,pure_name", TWINS)
def test_twins_expose_the_same_names_and_signatures(compiled_name, pure_name):
    compiled, pure = importlib.import_module(compiled_name), importlib.import_module(pure_name)
    assert public(compiled) == public(pure), (sorted(public(compiled) - public(pure)),
                                              sorted(public(pure) - public(compiled)))
    ours, theirs = callables(compiled), callables(pure)
    assert set(ours) == set(theirs)
    assert len(ours) >= 2
    for name in sorted(ours):
        if ours[name] is theirs[name]:      # the same object, shared from a common module
            continue
        assert str(signature(ours[name], compiled, True)) == str(signature(theirs[name], pure, False)), name


def test_compiled_signatures_are_embedded():
    """help() on a compiled function shows its arguments, not `(*args, **kwargs)`."""
    cpio = importlib.import_module("wwfast._cpio")
    assert cpio.NewcWriter.__doc__.startswith("NewcWriter(fileobj, mtime=None)")
    assert cpio.NewcWriter.add_tree.__doc__.startswith(
        "NewcWriter.add_tree(self, root, excludes=(), one_file_system=True, planned=None)")
