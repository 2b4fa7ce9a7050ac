"""Named random substreams: every random stream of a run is derived from the run's seed by name.

``substream(seed, "adapt", k)`` is a 63-bit seed that is a hash of the seed and the names, so
streams with different names are independent (as far as a cryptographic hash can tell), and
which stream feeds which draw is written where it is used instead of as unstated offsets
(``seed + 1``, ``seed + 7919 k``) whose collisions nobody checks.
"""

from __future__ import annotations

import hashlib

import torch

Name = str | int


def substream(seed: int, *names: Name) -> int:
    """The 63-bit seed of the substream ``names`` of ``seed`` (BLAKE2b of both).

    Names are strings or ints; ``substream(s, "adapt", 0)`` and ``substream(s, "adapt", 1)``
    are as unrelated as ``substream(s, "pool")`` and ``substream(s + 1, "pool")``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    for name in names:
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            raise TypeError(f"substream names must be str or int, got {name!r}")
    key = repr((seed, *names)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def substream_generator(
    seed: int, *names: Name, device: torch.device | str | None = None
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``substream(seed, *names)``."""
    generator = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    generator.manual_seed(substream(seed, *names))
    return generator
