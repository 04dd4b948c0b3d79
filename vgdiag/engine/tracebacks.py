"""Where in the user's code an exception was raised: ' (file.py:LINE)'."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback

import torch

# Frames in these folders are not the user's: the location names the deepest other one.
_OWN_DIRS = (
    *(os.path.dirname(m.__file__ or "") + os.sep
      for m in (torch, sys.modules[__name__.partition(".")[0]])),
    sysconfig.get_paths()["stdlib"] + os.sep,
)


def user_location(exc: BaseException) -> str:
    """' (file.py:LINE)' for the deepest frame of `exc` outside torch, vgdiag and the
    standard library; '' when there is none."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_OWN_DIRS) and not f.filename.startswith("<")]
    if not frames:
        return ""
    return f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"


def failure_line(exc: BaseException) -> str:
    """'Type: message (file.py:LINE)' on one line: how a run says what ended it, the
    line being the deepest frame in the user's code (`vgdiag run` and `vgdiag.watch`)."""
    from vgdiag.engine.interrupts import describe_exit
    from vgdiag.errors import UserError
    from vgdiag.textfmt import MAX_DETAIL, one_line

    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        text = describe_exit(exc)
    elif isinstance(exc, UserError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return (one_line(text, MAX_DETAIL) or type(exc).__name__) + user_location(exc)
