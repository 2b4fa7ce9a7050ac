"""The learn2learn adapter (TasksetFamily) and the learn2learn MAML baseline (L2LMAML).

Everything runs on small synthetic MetaDatasets: no downloads.
"""

from __future__ import annotations

import io
import random
import sys

import pytest
import torch
import torch.nn.functional as F

l2l = pytest.importorskip("learn2learn", reason="learn2learn extra not installed")

from esmaml.meta.l2l_maml import L2LMAML, supervised_loss  # noqa: E402
from esmaml.tasks import fewshot  # noqa: E402
from esmaml.tasks.fewshot import (  # noqa: E402
    TasksetFamily,
    fewshot_taskset,
    import_learn2learn,
    make_fewshot_family,
    synthetic_metadataset,
)
from esmaml.tasks.sine import NonDifferentiableSine, SineRegression  # noqa: E402

# The per-task MAML loops run tiny ops: one intra-op thread avoids stalls on a shared 2-core box.
pytestmark = pytest.mark.usefixtures("single_thread")

WAYS, SHOTS, QUERY = 5, 2, 3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tagged_metadataset(num_classes: int = 20, per_class: int = 8):
    """Inputs ``[class, index, 0, ...]`` so tests can read each example's origin."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    inputs = torch.zeros(labels.numel(), 4)
    inputs[:, 0] = labels.float()
    inputs[:, 1] = torch.arange(per_class).repeat(num_classes).float()
    return l2l.data.MetaDataset(torch.utils.data.TensorDataset(inputs, labels))


@pytest.fixture(scope="module")
def family() -> TasksetFamily:
    return make_fewshot_family(
        synthetic_metadataset(), ways=WAYS, shots=SHOTS, query_shots=QUERY, hidden=(32,)
    )


@pytest.fixture(scope="module")
def tagged() -> TasksetFamily:
    return make_fewshot_family(tagged_metadataset(), ways=WAYS, shots=SHOTS, query_shots=QUERY)


# -- adapter -----------------------------------------------------------------------------------


def test_fewshot_shapes_and_model(family: TasksetFamily) -> None:
    tasks = family.sample_tasks(4, generator=gen())
    assert {key: tuple(value.shape) for key, value in tasks.items()} == {
        "x_support": (4, WAYS * SHOTS, 16),
        "y_support": (4, WAYS * SHOTS),
        "x_query": (4, WAYS * QUERY, 16),
        "y_query": (4, WAYS * QUERY),
    }
    assert tasks["y_support"].dtype == torch.int64 and tasks["x_support"].dtype == torch.float32
    assert family.model.sizes == [16, 32, WAYS]
    assert family.query_shots == QUERY and family.feature_shape == (16,)
    assert family.differentiable


def test_labels_remapped_and_support_query_disjoint(tagged: TasksetFamily) -> None:
    tasks = tagged.sample_tasks(20, generator=gen(1))
    for i in range(20):
        ys, yq = tasks["y_support"][i], tasks["y_query"][i]
        assert torch.equal(torch.bincount(ys, minlength=WAYS), torch.full((WAYS,), SHOTS))
        assert torch.equal(torch.bincount(yq, minlength=WAYS), torch.full((WAYS,), QUERY))
        xs, xq = tasks["x_support"][i], tasks["x_query"][i]
        # Each remapped label is one original class, the same in support and query.
        for label in range(WAYS):
            origin = torch.cat([xs[ys == label, 0], xq[yq == label, 0]]).unique()
            assert origin.numel() == 1
        # No example is in both sets.
        support = {tuple(row.tolist()) for row in xs[:, :2]}
        query = {tuple(row.tolist()) for row in xq[:, :2]}
        assert len(support) == WAYS * SHOTS and not support & query


def test_train_and_test_classes_are_disjoint(tagged: TasksetFamily) -> None:
    train = tagged.sample_tasks(30, split="train", generator=gen(2))["x_support"][..., 0]
    test = tagged.sample_tasks(30, split="test", generator=gen(2))["x_support"][..., 0]
    train_classes, test_classes = set(train.unique().tolist()), set(test.unique().tolist())
    assert len(test_classes) == 5 and len(train_classes) == 15  # 25% of 20 classes held out
    assert not train_classes & test_classes


def test_loss_and_accuracy_match_module(family: TasksetFamily) -> None:
    tasks = family.sample_tasks(3, generator=gen(3))
    params = family.init_params(gen(4))
    module = family.model.to_module(params)
    ids = torch.arange(3)
    with torch.no_grad():
        for phase, split in (("adapt", "support"), ("query", "query")):
            manual = torch.stack(
                [
                    F.cross_entropy(module(tasks[f"x_{split}"][i]), tasks[f"y_{split}"][i])
                    for i in ids
                ]
            )
            torch.testing.assert_close(family.loss(params, tasks, ids, phase=phase), manual)
        accuracy = family.metrics(params, tasks, ids)["accuracy"]
        manual_acc = torch.stack(
            [
                (module(tasks["x_query"][i]).argmax(-1) == tasks["y_query"][i]).float().mean()
                for i in ids
            ]
        )
    torch.testing.assert_close(accuracy, manual_acc)
    # Broadcasting: a [P, K] population against [P, 1] task ids.
    population = torch.stack([family.init_params(gen(s)) for s in range(6)]).reshape(3, 2, -1)
    ids = torch.tensor([[0], [2], [1]])
    out = family.loss(population, tasks, ids)
    assert out.shape == (3, 2) and family.metrics(population, tasks, ids)["accuracy"].shape == (
        3,
        2,
    )
    torch.testing.assert_close(out[1, 0], family.loss(population[1, 0], tasks, torch.tensor(2)))


def test_sampling_reproducible_and_leaves_python_random_alone(family: TasksetFamily) -> None:
    random.seed(123)
    state = random.getstate()
    a = family.sample_tasks(3, generator=gen(9))
    assert random.getstate() == state
    b = family.sample_tasks(3, generator=gen(9))
    c = family.sample_tasks(3, generator=gen(10))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["x_support"], c["x_support"])
    torch.manual_seed(0)
    d = family.sample_tasks(2)
    torch.manual_seed(0)
    assert torch.equal(d["x_query"], family.sample_tasks(2)["x_query"])


def test_malformed_tasksets_raise_clear_errors() -> None:
    dataset = synthetic_metadataset(num_classes=10, per_class=6)
    taskset = fewshot_taskset(dataset, WAYS, SHOTS + QUERY)
    with pytest.raises(ValueError, match="support set would be empty"):
        TasksetFamily(taskset, ways=WAYS, shots=0)
    with pytest.raises(ValueError, match=r"expected ways\*\(shots\+query_shots\)"):
        TasksetFamily(taskset, ways=WAYS, shots=SHOTS, query_shots=QUERY + 1)
    with pytest.raises(ValueError, match="query_shots >= 1"):
        TasksetFamily(taskset, ways=WAYS, shots=SHOTS + QUERY)  # no query examples left
    transforms = l2l.data.transforms
    unmapped = l2l.data.Taskset(
        dataset,
        task_transforms=[
            transforms.NWays(dataset, WAYS),
            transforms.KShots(dataset, SHOTS + QUERY),
            transforms.LoadData(dataset),
        ],
    )
    with pytest.raises(ValueError, match="RemapLabels"):
        TasksetFamily(unmapped, ways=WAYS, shots=SHOTS, query_shots=QUERY)
    with pytest.raises(TypeError, match="LoadData"):
        bare = l2l.data.Taskset(dataset, task_transforms=[transforms.NWays(dataset, WAYS)])
        TasksetFamily(bare, ways=WAYS, shots=SHOTS)
    family = TasksetFamily(taskset, ways=WAYS, shots=SHOTS)  # query_shots inferred
    assert family.query_shots == QUERY
    with pytest.raises(ValueError, match="no 'test' taskset"):
        family.sample_tasks(1, split="test")
    with pytest.raises(ValueError, match="fewer than shots\\+query_shots"):
        make_fewshot_family(dataset, ways=WAYS, shots=4, query_shots=4)
    with pytest.raises(ValueError, match="fewer than ways"):
        make_fewshot_family(dataset, ways=9, shots=1)  # 25% of 10 classes -> 8 train classes
    with pytest.raises(ValueError, match="support set is empty"):
        make_fewshot_family(dataset, ways=WAYS, shots=0)
    with pytest.raises(ValueError, match="unknown dataset name"):
        make_fewshot_family("mnist")


def test_missing_learn2learn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "learn2learn", None)
    with pytest.raises(ImportError, match=r"scripts/setup\.sh"):
        import_learn2learn()
    with pytest.raises(ImportError, match=r"scripts/setup\.sh"):
        L2LMAML(SineRegression())


def test_omniglot_path_builds_without_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'omniglot' branch, with FullOmniglot replaced by a tiny offline fake."""
    from PIL import Image

    calls = {}

    class FakeOmniglot(torch.utils.data.Dataset):
        def __init__(self, root: str, transform=None, download: bool = False):
            calls.update(root=root, download=download)
            self.transform = transform

        def __len__(self) -> int:
            return 30 * 4  # 30 classes of 4 drawings

        def __getitem__(self, i: int):
            image = Image.new("L", (105, 105), color=(i * 7) % 256)
            return self.transform(image), i // 4

    monkeypatch.setattr(l2l.vision.datasets, "FullOmniglot", FakeOmniglot)
    family = make_fewshot_family("omniglot", ways=5, shots=1, query_shots=1, root="/nowhere")
    assert calls == {"root": "/nowhere", "download": True}
    tasks = family.sample_tasks(2, generator=gen())
    assert tasks["x_support"].shape == (2, 5, 1, 28, 28)
    assert family.model.sizes[0] == 28 * 28
    assert family.loss(family.init_params(gen()), tasks, torch.arange(2)).shape == (2,)
    assert (
        fewshot.omniglot_metadataset.__doc__ and "internet" in fewshot.omniglot_metadataset.__doc__
    )


# -- MAML baseline -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sine", "fewshot"])
def test_flat_params_match_functional_layout(kind: str, family: TasksetFamily) -> None:
    fam = SineRegression() if kind == "sine" else family
    maml = L2LMAML(fam, seed=3)
    flat = maml.parameters_flat()
    assert flat.shape == (fam.num_params,)
    assert torch.equal(flat, fam.init_params(gen(3)))
    tasks = fam.sample_tasks(3, generator=gen(5))
    ids = torch.arange(3)
    with torch.no_grad():
        for phase, split in (("adapt", "support"), ("query", "query")):
            via_module = torch.stack(
                [
                    supervised_loss(
                        maml.maml.module, tasks[f"x_{split}"][i], tasks[f"y_{split}"][i]
                    )
                    for i in ids
                ]
            )
            torch.testing.assert_close(fam.loss(flat, tasks, ids, phase=phase), via_module)
    # After an update the layouts still agree (the module's parameters are what moved).
    maml.step(tasks)
    pre, _ = maml.evaluate(tasks, steps=0)
    torch.testing.assert_close(fam.loss(maml.parameters_flat(), tasks, ids), pre)


@pytest.mark.parametrize("kind", ["sine", "fewshot"])
def test_evaluate_matches_shared_evaluator(kind: str, family: TasksetFamily) -> None:
    """learn2learn's inner loop equals ``learner.adaptation`` on flat parameters, so the lead's
    ``evaluate_adaptation`` scores L2LMAML like the ES-MAML learners."""
    from esmaml.meta.base import MetaLearner, evaluate_adaptation

    fam = SineRegression() if kind == "sine" else family
    maml = L2LMAML(fam, alpha=0.01 if kind == "sine" else 0.5, adaptation_steps=2, seed=1)
    assert isinstance(maml, MetaLearner) and maml.tasks_per_iteration == 25
    tasks = fam.sample_tasks(4, split="test", generator=gen(6))
    pre, post = maml.evaluate(tasks)
    shared = evaluate_adaptation(fam, maml.adaptation, maml.parameters_flat(), tasks, seed=0)
    torch.testing.assert_close(shared.pre, pre)
    torch.testing.assert_close(shared.post, post, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(pre, post)  # the adaptation did something


def test_non_finite_meta_gradient_raises_without_stepping() -> None:
    sine = SineRegression()
    maml = L2LMAML(sine, seed=0)
    broken = torch.full((sine.num_params,), float("nan"))
    maml.load_parameters_flat(broken)
    with pytest.raises(FloatingPointError, match="NaN"):
        maml.step(sine.sample_tasks(2, generator=gen()))
    assert maml.iteration == 0 and torch.isnan(maml.parameters_flat()).all()


def test_maml_rejects_non_differentiable_families() -> None:
    with pytest.raises(ValueError, match="ES-MAML"):
        L2LMAML(NonDifferentiableSine())
    with pytest.raises(ValueError, match="ES-MAML"):
        L2LMAML(SineRegression(activation="step"))
    with pytest.raises(ValueError, match="optimizer"):
        L2LMAML(SineRegression(), optimizer="rmsprop")


def test_step_metrics_evaluate_and_checkpoint(family: TasksetFamily) -> None:
    sine = SineRegression()
    maml = L2LMAML(sine, adaptation_steps=2, seed=0)
    tasks = sine.sample_tasks(4, generator=gen(0))
    metrics = maml.step(tasks)
    assert set(metrics) == {"meta_objective", "grad_norm", "queries"}
    assert metrics["queries"] == 4 * 3 and metrics["grad_norm"] > 0
    pre, post = maml.evaluate(tasks, steps=0)
    torch.testing.assert_close(pre, post)
    # Checkpoint round trip: a differently seeded learner becomes identical.
    other = L2LMAML(sine, adaptation_steps=2, seed=1)
    other.load_state_dict(maml.state_dict())
    assert torch.equal(other.parameters_flat(), maml.parameters_flat())
    assert maml.step(tasks) == other.step(tasks)
    assert torch.equal(other.parameters_flat(), maml.parameters_flat())
    # A state is a snapshot (later steps leave it alone) and survives torch.save/load.
    snapshot = maml.state_dict()
    maml.step(tasks)
    buffer = io.BytesIO()
    torch.save(snapshot, buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=False))
    assert other.iteration == 2 and not torch.equal(other.parameters_flat(), maml.parameters_flat())
    other.step(tasks)  # replays the step maml took from the snapshot
    assert torch.equal(other.parameters_flat(), maml.parameters_flat())
    other.load_parameters_flat(torch.zeros(sine.num_params))
    assert torch.count_nonzero(other.parameters_flat()) == 0
    # Classification reports accuracy too.
    fewshot_metrics = L2LMAML(family, alpha=0.5).step(family.sample_tasks(2, generator=gen()))
    assert 0.0 <= fewshot_metrics["accuracy"] <= 1.0


@pytest.mark.slow
def test_maml_on_sine_learns_to_adapt() -> None:
    torch.manual_seed(0)
    sine = SineRegression()
    maml = L2LMAML(sine, meta_lr=1e-3, alpha=0.01, seed=0)
    held_out = sine.sample_tasks(100, split="test", generator=gen(123))
    _, start = maml.evaluate(held_out)
    train = gen(10)
    for _ in range(100):
        maml.step(sine.sample_tasks(10, generator=train))
    pre, post = maml.evaluate(held_out)
    # Paired over the same held-out tasks: adaptation helps, and more than at the start.
    assert post.mean() < pre.mean()
    assert post.mean() < start.mean() - 0.3
