"""Independent random streams from one user seed.

A model's initialisation and a rule's feedback matrices are both drawn "from seed s"; they must
not be the same numbers (fa with ``B = W(0)`` would silently be align-prop). Each purpose gets its
own stream, derived with numpy's ``SeedSequence`` from ``(seed, purpose)``.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derived_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` ("model", "feedback", "shuffle", ...) derived from ``seed``."""
    tag = zlib.crc32(purpose.encode())
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``purpose``, independent of every other purpose's."""
    return torch.Generator().manual_seed(derived_seed(seed, purpose))
