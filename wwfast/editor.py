"""Run the user's editor on a file: $VISUAL, else $EDITOR, else vi (words split as a shell would)."""
import os
import shlex
import subprocess

from wwfast.errors import UsageError


def run_editor(path, editor=None):
    command = editor or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        result = subprocess.run(shlex.split(command) + [str(path)])
    except FileNotFoundError:
        raise UsageError(f"editor {command!r} not found (set $EDITOR)") from None
    if result.returncode != 0:
        raise UsageError(f"the editor ({command}) exited with status {result.returncode}: nothing written")
