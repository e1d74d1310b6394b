"""torch's weights-only allowlist (wsiseg.model._torch_allowlist), pinned to the installed torch."""

from __future__ import annotations

import torch

from wsiseg.model import _torch_allowlist


def test_the_installed_torch_is_supported_and_allows_what_the_readers_need() -> None:
    """A new torch release fails here first: check the inert reader against it, then widen SUPPORTED."""
    first, last = _torch_allowlist.SUPPORTED
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    assert first <= (major, minor) < last, (torch.__version__, _torch_allowlist.SUPPORTED)
    allowed = _torch_allowlist.allowed_globals()
    needed = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
              "torch.Size")
    for name in needed:
        assert name in allowed, name
    assert "builtins.eval" not in allowed and "os.system" not in allowed
