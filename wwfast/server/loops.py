"""Event loop choice in one place: uvloop when it imports, plain asyncio otherwise.

uvloop is an accelerator, never a dependency: `WWFAST_LOOP=asyncio` forces the
standard loop (tests run the servers under both). We hand a loop factory to
`asyncio.Runner` rather than installing a policy (uvloop deprecates install()).
"""
import asyncio
import os


def uvloop_available():
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_name(requested=None):
    """'uvloop' or 'asyncio': the loop `run()` will use for `requested` (None/'auto' = best available)."""
    requested = requested or os.environ.get("WWFAST_LOOP", "auto") or "auto"
    if requested not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"unknown event loop {requested!r} (auto, uvloop or asyncio)")
    if requested == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if requested == "uvloop":
        raise RuntimeError("uvloop was asked for but does not import")
    return "asyncio"


def loop_factory(requested=None):
    if loop_name(requested) == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(coro, requested=None, debug=False):
    """Run `coro` to completion on a fresh loop of the chosen kind."""
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(requested)) as runner:
        return runner.run(coro)
