"""The tensor leaves of the differentiated arguments (``argnums``).

Each differentiated argument may be a tensor or a pytree of them (a dict of parameters, a tuple,
a nested structure). :class:`Leaves` flattens them, keeps the floating leaves that require grad
(deduplicated by identity, so a tied tensor is perturbed once and gets its gradient once), and
rebuilds the arguments around replacement leaves (the perturbed members).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch.utils._pytree as pytree
from torch import Tensor


def normalise_argnums(argnums: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(argnums, bool) or not isinstance(argnums, (int, tuple, list)):
        raise TypeError(f"argnums must be an int or a tuple of ints, got {argnums!r}")
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums:
        raise ValueError("argnums must name at least one argument")
    for num in nums:
        if isinstance(num, bool) or not isinstance(num, int):
            raise TypeError(f"argnums must contain ints, got {num!r} in {argnums!r}")
    return nums


class Leaves:
    """The tensor leaves of the differentiated arguments, deduplicated by identity so a tied
    tensor is perturbed once and receives its gradient once."""

    def __init__(self, args: tuple[Any, ...], argnums: tuple[int, ...], name: str):
        resolved: list[int] = []
        for num in argnums:
            if not -len(args) <= num < len(args):
                raise ValueError(
                    f"argnums={num} is out of range for {name} called with {len(args)} positional "
                    f"argument(s); valid: {-len(args)} to {len(args) - 1}"
                )
            resolved.append(num % len(args))
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"argnums {argnums} names the same argument twice")
        self.argnums = tuple(resolved)
        self.flat: list[list[Any]] = []
        self.unflatten: list[Callable[[list[Any]], Any]] = []
        self.unique: list[Tensor] = []  # differentiated (floating, requires grad) leaves
        self.slots: list[list[int | None]] = []  # per arg, per leaf: index into unique or None
        position: dict[int, int] = {}
        for num in self.argnums:
            leaves, unflatten = flatten(args[num])
            tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
            if not tensors:
                raise TypeError(
                    f"argument {num} of {name} is differentiated (argnums) but holds no tensor; "
                    "pass a tensor or a dict/tuple/list of tensors"
                )
            slots: list[int | None] = []
            for leaf in leaves:
                if leaf is None:  # an absent entry (a bias-less layer): passed through
                    slots.append(None)
                    continue
                if not isinstance(leaf, Tensor):
                    raise TypeError(
                        f"argument {num} of {name} holds a {type(leaf).__name__} leaf; every leaf "
                        "of a differentiated argument must be a tensor (or None)"
                    )
                if not (leaf.is_floating_point() and leaf.requires_grad):
                    slots.append(None)  # frozen: passed through unperturbed
                    continue
                if id(leaf) not in position:
                    position[id(leaf)] = len(self.unique)
                    self.unique.append(leaf)
                slots.append(position[id(leaf)])
            self.flat.append(leaves)
            self.unflatten.append(unflatten)
            self.slots.append(slots)

    def rebuild(self, args: tuple[Any, ...], replacement: Sequence[Tensor]) -> list[Any]:
        """``args`` with each differentiated leaf replaced by ``replacement[its index]``."""
        new_args = list(args)
        for num, leaves, unflatten, slots in zip(
            self.argnums, self.flat, self.unflatten, self.slots
        ):
            new_leaves = [
                leaf if slot is None else replacement[slot] for leaf, slot in zip(leaves, slots)
            ]
            new_args[num] = unflatten(new_leaves)
        return new_args


def flatten(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """``pytree.tree_flatten`` with its inverse; a tensor, or a plain tuple, list or dict of
    tensors (the usual parameter containers), skips the general pytree walk."""
    if isinstance(tree, Tensor):
        return [tree], _first
    kind = type(tree)
    if kind in (tuple, list) and all(isinstance(leaf, Tensor) for leaf in tree):
        return list(tree), kind
    if kind is dict and all(isinstance(leaf, Tensor) for leaf in tree.values()):
        return list(tree.values()), functools.partial(_rebuild_dict, list(tree))
    leaves, spec = pytree.tree_flatten(tree)
    return leaves, functools.partial(pytree.tree_unflatten, treespec=spec)


def _first(leaves: list[Any]) -> Any:
    return leaves[0]


def _rebuild_dict(keys: list[Any], leaves: list[Any]) -> dict[Any, Any]:
    return dict(zip(keys, leaves))
