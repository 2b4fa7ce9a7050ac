"""Flat parameter vectors: one [D] tensor stands for a model, [*B, D] for a population."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn


class FlatParams:
    """The layout of named tensors inside a flat vector (names, shapes, offsets)."""

    def __init__(self, shapes: Mapping[str, torch.Size | tuple[int, ...]]):
        self.names = list(shapes)
        self.shapes = [torch.Size(shape) for shape in shapes.values()]
        self.numels = [math.prod(shape) for shape in self.shapes]
        self.num_params = sum(self.numels)

    @classmethod
    def from_module(cls, module: nn.Module) -> FlatParams:
        return cls({name: p.shape for name, p in module.named_parameters() if p.requires_grad})

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Named tensors (each ``[*B, *shape]``) -> ``[*B, D]``."""
        pieces = []
        for name, shape in zip(self.names, self.shapes):
            value = tensors[name]
            batch = value.shape[: value.ndim - len(shape)]
            pieces.append(value.reshape(*batch, -1))
        return torch.cat(pieces, dim=-1)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``[*B, D]`` -> named views ``[*B, *shape]``."""
        if flat.shape[-1] != self.num_params:
            raise ValueError(
                f"flat parameters have {flat.shape[-1]} entries, the layout needs {self.num_params}"
            )
        batch = flat.shape[:-1]
        pieces = flat.split(self.numels, dim=-1)
        return {
            name: piece.reshape(*batch, *shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes)
        }
