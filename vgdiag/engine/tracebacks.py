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
