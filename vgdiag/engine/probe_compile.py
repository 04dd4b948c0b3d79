"""A compiled model's sampled steps run eager; its other steps run the compiled graph.

Hooks inside a compiled forward split its graph (the output-gradient hook cannot be
traced), and Dynamo does not guard on module hooks (`skip_nnmodule_hook_guards`): the
split graph compiled for the first sampled step would then serve every later step too,
sampled or not (measured: 13 graphs and 7x the plain step's time on a 3-layer MLP,
against 1 graph). So while the probe's hooks are attached, Dynamo's stance is
`force_eager` (`torch.compiler.set_stance`): the hooks see an eager forward and
backward, exactly, and the compiled graph, traced without hooks, stays whole.

The stance is process-wide, and on from the end of the step before a sampled one
(where the hooks go on) to the sampled step's optimizer step: a user's other compiled
functions called in that window (an evaluation between epochs, say) run eager too, and
with every step sampled the model never runs compiled. A stance the loop sets itself
meanwhile is kept. Where `set_stance` is missing (PyTorch before 2.6) or refuses, the
hooks run inside the compiled graph as before.
"""

from __future__ import annotations

import threading
from typing import Any


def can_run_eager() -> bool:
    """Whether this PyTorch can switch compiled code to eager for a while."""
    try:
        import torch._dynamo.eval_frame as eval_frame
        import torch.compiler

        return hasattr(torch.compiler, "set_stance") and hasattr(eval_frame, "_stance")
    except Exception:  # noqa: BLE001  no Dynamo on this platform
        return False


class EagerWhileSampled:
    """Enter `force_eager` when a probe's hooks go on; leave when they come off.

    Counted across the process: two watched models (a GAN's, or a probe armed while
    another is) share the one stance, so the first to enter saves the stance the loop
    had and the last to leave puts it back, if the stance is still `force_eager`: one
    the loop set in between is its own, and stays. Entering twice or leaving without
    entering does nothing.
    """

    _lock = threading.Lock()
    _entered = 0  # probes in the process whose hooks are on
    _saved: Any = None  # the stance before the first of them

    def __init__(self) -> None:
        self.active = False

    def enter(self) -> None:
        cls = EagerWhileSampled
        with cls._lock:
            if self.active:
                return
            if cls._entered == 0:
                try:
                    import torch._dynamo.eval_frame as eval_frame
                    import torch.compiler

                    saved = eval_frame._stance
                    torch.compiler.set_stance("force_eager")
                except Exception:  # noqa: BLE001  the hooks then run in the graph
                    return
                cls._saved = saved
            cls._entered += 1
            self.active = True

    def leave(self) -> None:
        cls = EagerWhileSampled
        with cls._lock:
            if not self.active:
                return
            self.active = False
            cls._entered -= 1
            if cls._entered:
                return
            saved, cls._saved = cls._saved, None
            try:
                import torch._dynamo.eval_frame as eval_frame
                import torch.compiler

                if eval_frame._stance.stance != "force_eager":
                    return  # the loop chose a stance since: not ours to undo
                torch.compiler.set_stance(saved.stance,
                                          skip_guard_eval_unsafe=saved.skip_guard_eval_unsafe,
                                          force_backend=saved.backend)
            except Exception:  # noqa: BLE001  a stance that cannot be put back stays
                pass
