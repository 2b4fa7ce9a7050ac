"""Few-shot classification from learn2learn tasksets.

:class:`TasksetFamily` turns any ``learn2learn.data.Taskset`` (``NWays``, ``KShots``,
``LoadData``, ``RemapLabels`` over a ``MetaDataset``) into an esmaml task family: each task is
split with ``learn2learn.data.partition_task`` into ``shots`` support and ``query_shots`` query
examples per class, and judged by a batched :class:`~esmaml.models.FunctionalMLP` classifier on
flattened inputs.

learn2learn is an optional extra (``bash scripts/setup.sh`` builds it); it is imported lazily,
so this module imports without it.

Seeding: learn2learn's transforms draw from Python's global ``random``. ``sample_tasks`` seeds
``random`` from the torch generator (or torch's global RNG when it is None) inside a saved and
restored ``random`` state, so the same generator state gives the same tasks and the caller's
``random`` stream is untouched. A ``Taskset`` with ``num_tasks > 0`` caches the descriptions it
has drawn, so its tasks also depend on which were drawn before (learn2learn's semantics).
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from esmaml.models import FunctionalMLP
from esmaml.tasks.base import Phase, Split, TaskFamily, Tasks, check_task_ids
from esmaml.tasks.sine import (
    NON_DIFFERENTIABLE_ACTIVATIONS,
    check_params,
    check_phase,
    check_split,
    gather_tasks,
)

if TYPE_CHECKING:
    from learn2learn.data import MetaDataset, Taskset

INSTALL_HINT = (
    "learn2learn is an optional extra of esmaml: `bash scripts/setup.sh` builds it "
    "(learn2learn 0.2.0 ships only as source and needs its Cython files regenerated)"
)

#: The task fields a :class:`TasksetFamily` task dict holds.
FEWSHOT_FIELDS: tuple[str, ...] = ("x_support", "y_support", "x_query", "y_query")


def import_learn2learn() -> Any:
    """``import learn2learn`` with an error that says how to install it.

    learn2learn imports the unmaintained ``gym``, whose ``__init__`` prints a deprecation
    banner (from the ``gym_notices`` package) to stderr: esmaml uses gymnasium, so that banner
    is removed. Anything else the import writes to stderr is passed on unchanged.
    """
    if sys.modules.get("learn2learn") is not None:  # imported already: no banner to catch
        return sys.modules["learn2learn"]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import learn2learn
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT}; import failed: {error}") from error
    finally:
        rest = _without_gym_banner(captured.getvalue())
        if rest:
            sys.stderr.write(rest)
    return learn2learn


def _without_gym_banner(text: str) -> str:
    """``text`` minus the notice ``gym`` prints on import (the exact text gym_notices holds
    for the installed gym version; lines starting with gym's known banner opening otherwise)."""
    notices: list[str] = []
    with contextlib.suppress(Exception):  # gym or gym_notices absent or changed: nothing known
        import gym
        import gym_notices.notices as gym_notices

        notice = gym_notices.notices.get(gym.__version__)
        if notice:
            notices.append(notice + "\n")
    for notice in notices:
        text = text.replace(notice, "")
    if text.startswith("Gym has been unmaintained"):
        # A banner from a gym_notices version not matched exactly: drop through its last line.
        lines = text.splitlines(keepends=True)
        ends = [i for i, line in enumerate(lines) if "migration_guide" in line]
        text = "".join(lines[ends[0] + 1 :]) if ends else ""
    return text


@contextlib.contextmanager
def seeded_python_random(generator: torch.Generator | None) -> Iterator[int]:
    """Seed Python's ``random`` from ``generator`` for the block, then restore its state.

    The seed is one 62-bit draw from the torch generator (torch's global RNG when None), so
    it advances the generator exactly once per block.
    """
    device = generator.device if generator is not None else None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    state = random.getstate()
    random.seed(seed)
    try:
        yield seed
    finally:
        random.setstate(state)


class TasksetFamily(TaskFamily):
    """Few-shot classification tasks from learn2learn ``Taskset``s, an MLP classifier.

    Tasks (``n`` of them, ``N = ways * shots``, ``M = ways * query_shots``): ``x_support
    [n, N, *feat]``, ``y_support [n, N]`` (int64 in ``[0, ways)``), ``x_query [n, M, *feat]``,
    ``y_query [n, M]``.

    Loss: cross-entropy ``-mean_j log softmax(f_params(x_j))[y_j]`` on the support set
    (``phase='adapt'``) or query set (``'query'``); ``metrics`` gives query accuracy.

    Args:
        train: the taskset of the train split; each ``sample()`` must return ``(X, y)`` with
            ``ways * (shots + query_shots)`` examples, ``shots + query_shots`` of each label
            ``0..ways-1`` (``RemapLabels`` does that).
        test: the taskset of the test split (None: ``split='test'`` raises, so meta-test
            classes never silently overlap meta-train ones).
        ways, shots: classes per task and support examples per class.
        query_shots: query examples per class (None: inferred from a probe sample).
        hidden, activation, quantize: the classifier ``[feat, *hidden, ways]``.
        device: where tasks are stored and losses computed.
    """

    def __init__(
        self,
        train: Taskset,
        test: Taskset | None = None,
        *,
        ways: int,
        shots: int,
        query_shots: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        quantize: float = 0.0,
        device: torch.device | str | None = None,
    ):
        import_learn2learn()
        for name, value in (("ways", ways), ("shots", shots)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{name} must be a positive int, got {value!r}"
                    + ("; the support set would be empty" if name == "shots" else "")
                )
        if query_shots is not None and (
            isinstance(query_shots, bool) or not isinstance(query_shots, int) or query_shots < 1
        ):
            raise ValueError(f"query_shots must be a positive int or None, got {query_shots!r}")
        self.tasksets: dict[str, Taskset | None] = {"train": train, "test": test}
        self.ways, self.shots = ways, shots
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        # Probe one task (under a fixed, restored Python RNG state) to learn the feature shape
        # and the query size, and to fail fast on a malformed taskset.
        with seeded_python_random(torch.Generator().manual_seed(0)):
            x, _, self.query_shots = self._draw(train, "train", query_shots)
        self.feature_shape = tuple(x.shape[1:])
        features = int(torch.Size(self.feature_shape).numel())
        self.model = FunctionalMLP(
            [features, *hidden, ways],
            activation=activation,
            output_activation="identity",
            quantize=quantize,
        )
        self.num_params = self.model.num_params
        self.differentiable = activation not in NON_DIFFERENTIABLE_ACTIVATIONS and quantize == 0
        self.stochastic = False

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> TasksetFamily:
        """Store future tasks and initial parameters on ``device`` (in place; returns self)."""
        self._device = torch.device(device)
        return self

    # -- sampling ----------------------------------------------------------------------------
    def _draw(
        self, taskset: Taskset, split: str, query_shots: int | None
    ) -> tuple[Tensor, Tensor, int]:
        """One ``(X, y, query_shots)`` from ``taskset``, checked for size and labels."""
        where = f"{type(self).__name__}({split} taskset)"
        sample = taskset.sample()
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TypeError(
                f"{where}: taskset.sample() must return (X, y), got {type(sample).__name__} "
                "(end the task transforms with LoadData)"
            )
        x, y = sample
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"{where}: taskset.sample() must return tensors; add LoadData")
        y = y.reshape(-1)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{where}: X has {x.shape[0]} examples but y has {y.shape[0]}")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"{where}: labels must be integers, got dtype {y.dtype}")
        total = y.shape[0]
        per_class, leftover = divmod(total, self.ways)
        if query_shots is not None:
            expected = self.ways * (self.shots + query_shots)
            if total != expected:
                raise ValueError(
                    f"{where}: a task has {total} examples, expected ways*(shots+query_shots) = "
                    f"{self.ways}*({self.shots}+{query_shots}) = {expected}"
                )
        elif leftover or per_class <= self.shots:
            raise ValueError(
                f"{where}: a task has {total} examples; with ways={self.ways}, shots="
                f"{self.shots} it needs ways*(shots+query_shots) with query_shots >= 1 "
                "(build the taskset with KShots(dataset, shots + query_shots))"
            )
        if int(y.min()) < 0 or int(y.max()) >= self.ways:
            raise ValueError(
                f"{where}: labels must lie in [0, {self.ways}) (add RemapLabels), got values in "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        counts = torch.bincount(y.long(), minlength=self.ways)
        if not bool((counts == per_class).all()):
            raise ValueError(
                f"{where}: every label needs {per_class} examples (shots+query_shots), got "
                f"counts {counts.tolist()}"
            )
        return x, y.long(), per_class - self.shots

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        """``n`` tasks from the ``split`` taskset, each partitioned into support and query.

        Reproducible given ``generator`` (see the module docstring).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"number of tasks must be a positive int, got {n!r}")
        taskset = self.tasksets[check_split(split)]
        if taskset is None:
            raise ValueError(
                f"{type(self).__name__} has no {split!r} taskset; pass test=Taskset(...) built "
                "on held-out classes"
            )
        partition_task = import_learn2learn().data.partition_task
        fields: dict[str, list[Tensor]] = {key: [] for key in FEWSHOT_FIELDS}
        with seeded_python_random(generator):
            for _ in range(n):
                x, y, _ = self._draw(taskset, split, self.query_shots)
                (x_s, y_s), (x_q, y_q) = partition_task(x, y, shots=self.shots)
                for key, value in zip(FEWSHOT_FIELDS, (x_s, y_s, x_q, y_q)):
                    fields[key].append(value)
        tasks = {key: torch.stack(values) for key, values in fields.items()}
        tasks["x_support"] = tasks["x_support"].float()
        tasks["x_query"] = tasks["x_query"].float()
        return {key: value.to(self._device) for key, value in tasks.items()}

    # -- protocol ----------------------------------------------------------------------------
    def as_module(self, params: Tensor) -> torch.nn.Module:
        return self.model.to_module(params)

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """nn.Linear's default init, flattened: ``[D]`` on the family's device."""
        return self.model.init_params(generator).to(self._device)

    def logits(self, params: Tensor, tasks: Tasks, task_ids: Tensor, phase: Phase) -> Tensor:
        """Class scores ``[*B, N, ways]`` of the support/query inputs of tasks ``task_ids``."""
        where = f"{type(self).__name__}.loss"
        check_params(params, self.num_params, where)
        check_task_ids(task_ids, tasks, params.shape[:-1])
        split = "support" if check_phase(phase) == "adapt" else "query"
        x = gather_tasks(tasks, f"x_{split}", task_ids, where)  # [*T, N, *feat]
        if x.device != params.device:
            raise ValueError(
                f"{where}: params are on {params.device} but tasks on {x.device}; "
                "move one (family.to(device) stores tasks on device)"
            )
        x = x.reshape(*task_ids.shape, x.shape[task_ids.ndim], -1)  # flatten the features
        return self.model.apply(params, x.to(params.dtype))

    def labels(self, tasks: Tasks, task_ids: Tensor, phase: Phase) -> Tensor:
        """Labels ``[*T, N]`` of the support/query set of tasks ``task_ids``."""
        split = "support" if check_phase(phase) == "adapt" else "query"
        return gather_tasks(tasks, f"y_{split}", task_ids, f"{type(self).__name__}.loss")

    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Mean cross-entropy ``[*B]`` (``task_ids`` broadcasts against params' batch dims)."""
        logits = self.logits(params, tasks, task_ids, phase)  # [*B, N, ways]
        labels = self.labels(tasks, task_ids, phase).expand(logits.shape[:-1])
        log_probs = F.log_softmax(logits, dim=-1)
        return -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)

    def metrics(self, params: Tensor, tasks: Tasks, task_ids: Tensor) -> dict[str, Tensor]:
        """``accuracy [*B]``: fraction of query examples whose arg-max class is the label."""
        logits = self.logits(params, tasks, task_ids, "query")
        labels = self.labels(tasks, task_ids, "query").expand(logits.shape[:-1])
        return {"accuracy": (logits.argmax(-1) == labels).to(logits.dtype).mean(-1)}


# -- builders ---------------------------------------------------------------------------------


def synthetic_metadataset(
    num_classes: int = 20,
    per_class: int = 20,
    dim: int = 16,
    seed: int = 0,
    *,
    noise: float = 1.0,
) -> MetaDataset:
    """A small offline ``MetaDataset`` of class-conditional Gaussians.

    Class ``c`` has mean ``mu_c ~ N(0, I_dim)``; its examples are ``mu_c + noise * N(0, I_dim)``
    (a ``TensorDataset`` of float32 ``[dim]`` inputs and int64 labels ``0..num_classes-1``).
    """
    l2l = import_learn2learn()
    for name, value in (("num_classes", num_classes), ("per_class", per_class), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    inputs = means[labels] + noise * torch.randn(labels.numel(), dim, generator=generator)
    return l2l.data.MetaDataset(torch.utils.data.TensorDataset(inputs, labels))


def fewshot_taskset(dataset: MetaDataset, ways: int, samples: int, num_tasks: int = -1) -> Taskset:
    """``Taskset(dataset, [NWays(ways), KShots(samples), LoadData, RemapLabels], num_tasks)``.

    The transforms are built on ``dataset`` itself: built on a parent dataset (as learn2learn
    0.2.0's omniglot benchmark does) they would draw classes outside a filtered split.
    """
    l2l = import_learn2learn()
    transforms = l2l.data.transforms
    labels = list(dataset.labels)
    if len(labels) < ways:
        raise ValueError(f"the dataset has {len(labels)} classes, fewer than ways={ways}")
    smallest = min(len(dataset.labels_to_indices[label]) for label in labels)
    if smallest < samples:
        raise ValueError(
            f"a class of the dataset has {smallest} examples, fewer than shots+query_shots="
            f"{samples} (KShots samples without replacement)"
        )
    return l2l.data.Taskset(
        dataset,
        task_transforms=[
            transforms.NWays(dataset, ways),
            transforms.KShots(dataset, samples),
            transforms.LoadData(dataset),
            transforms.RemapLabels(dataset),
        ],
        num_tasks=num_tasks,
    )


def split_classes(
    dataset: MetaDataset, test_fraction: float, seed: int = 0
) -> tuple[MetaDataset, MetaDataset]:
    """Disjoint train/test ``FilteredMetaDataset``s: a seeded shuffle of the classes, the last
    ``round(test_fraction * classes)`` to test."""
    l2l = import_learn2learn()
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    labels = sorted(dataset.labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [labels[i] for i in order]
    num_test = max(1, round(test_fraction * len(labels)))
    if num_test >= len(labels):
        raise ValueError(f"cannot split {len(labels)} classes with test_fraction={test_fraction}")
    filtered = l2l.data.FilteredMetaDataset
    return (
        filtered(dataset, labels=shuffled[:-num_test]),
        filtered(dataset, labels=shuffled[-num_test:]),
    )


def omniglot_metadataset(root: str = "~/data", download: bool = True) -> MetaDataset:
    """Omniglot (1623 classes, 20 drawings each) as 28x28 float images ``[1, 28, 28]``.

    Needs internet on first use: ``FullOmniglot(root, download=True)`` fetches it into ``root``.
    Preprocessing follows learn2learn's benchmark: resize to 28 (Lanczos), ``1 - pixel``.
    """
    l2l = import_learn2learn()
    from PIL.Image import LANCZOS
    from torchvision import transforms

    pipeline = transforms.Compose(
        [transforms.Resize(28, interpolation=LANCZOS), transforms.ToTensor(), lambda x: 1.0 - x]
    )
    dataset = l2l.vision.datasets.FullOmniglot(root=root, transform=pipeline, download=download)
    return l2l.data.MetaDataset(dataset)


def make_fewshot_family(
    dataset_or_name: MetaDataset | torch.utils.data.Dataset | str,
    ways: int = 5,
    shots: int = 1,
    query_shots: int | None = None,
    *,
    test_dataset: MetaDataset | torch.utils.data.Dataset | None = None,
    test_fraction: float = 0.25,
    split_seed: int = 0,
    num_tasks: int = -1,
    root: str = "~/data",
    **family_kwargs: Any,
) -> TasksetFamily:
    """A :class:`TasksetFamily` with ``NWays/KShots/LoadData/RemapLabels`` tasksets.

    ``dataset_or_name``: a (Meta)Dataset, or ``'omniglot'`` (downloads into ``root``: needs
    internet; 1200 train / 423 test classes as in Finn et al.). Without ``test_dataset`` the
    classes are split (``test_fraction`` of them, seeded by ``split_seed``) so meta-test
    classes are unseen in meta-training. ``query_shots`` defaults to ``shots``;
    ``family_kwargs`` go to :class:`TasksetFamily` (``hidden``, ``activation``, ``device``).
    """
    l2l = import_learn2learn()
    query_shots = shots if query_shots is None else query_shots
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive int, got {shots!r}; the support set is empty")
    if not isinstance(query_shots, int) or query_shots < 1:
        raise ValueError(f"query_shots must be a positive int, got {query_shots!r}")

    def as_meta(dataset: Any) -> MetaDataset:
        if isinstance(dataset, l2l.data.MetaDataset | l2l.data.FilteredMetaDataset):
            return dataset
        if isinstance(dataset, torch.utils.data.Dataset):
            return l2l.data.MetaDataset(dataset)
        raise TypeError(f"expected a dataset or a dataset name, got {type(dataset).__name__}")

    if isinstance(dataset_or_name, str):
        if dataset_or_name.lower() != "omniglot":
            raise ValueError(f"unknown dataset name {dataset_or_name!r}; known: 'omniglot'")
        dataset = omniglot_metadataset(root)
        test_fraction = 423 / 1623  # the 1200/423 class split of Finn et al.
    else:
        dataset = as_meta(dataset_or_name)
    if test_dataset is not None:
        train_set, test_set = dataset, as_meta(test_dataset)
    else:
        train_set, test_set = split_classes(dataset, test_fraction, split_seed)
    samples = shots + query_shots
    return TasksetFamily(
        fewshot_taskset(train_set, ways, samples, num_tasks),
        fewshot_taskset(test_set, ways, samples, num_tasks),
        ways=ways,
        shots=shots,
        query_shots=query_shots,
        **family_kwargs,
    )
