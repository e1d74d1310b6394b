"""The one use of torch's internals: its weights-only allowlist, for reading files with foreign objects.

Reference-trained checkpoints (PyTorch Lightning) pickle Python objects besides their tensors, e.g.
``hyper_parameters`` as Lightning's ``AttributeDict``. :func:`wsiseg.model.torchfile.torch_load_inert`
reads them with an unpickler that rebuilds tensors and turns every other object into an inert stand-in,
so no code of the file's choosing runs. It resolves the tensor and container rebuild functions from the
list torch's own weights-only loader allows (``torch._weights_only_unpickler._get_allowed_globals()``).

Why not the public API: ``torch.serialization.get_unsafe_globals_in_checkpoint`` names the foreign
objects and ``torch.serialization.safe_globals`` admits stand-ins for them, but torch's weights-only
unpickler fills nothing but plain ``dict``/``list`` objects (``SETITEMS`` on a dict subclass such as
``AttributeDict`` raises "Can only SETITEMS for dict, ..."), so a Lightning checkpoint does not load that
way (checked with torch 2.14). Copying torch's allowlist instead would go stale as torch adds rebuild
functions.

Supported: torch 2.5 through 2.14 (:data:`SUPPORTED`); ``tests/model/test_torch_allowlist.py`` pins the
names wsiseg's readers need to the installed torch. A torch without the function raises CheckpointError
naming the supported releases.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from wsiseg.errors import CheckpointError

#: torch releases this is tested with: ``[first, last)`` as (major, minor)
SUPPORTED: tuple[tuple[int, int], tuple[int, int]] = ((2, 5), (2, 15))


@functools.cache
def allowed_globals() -> dict[str, Any]:
    """``"module.name" -> object`` of the functions and classes torch's weights-only loader may use:
    tensor and storage rebuilds, ``collections.OrderedDict``, ``torch.Size``, dtypes, ..."""
    try:
        from torch import _weights_only_unpickler

        return dict(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError) as exc:
        first, last = (".".join(map(str, v)) for v in SUPPORTED)
        raise CheckpointError(f"this torch ({torch.__version__}) lacks the weights-only allowlist that "
                              "reading checkpoints with foreign objects needs; use torch "
                              f">= {first}, < {last}") from exc
