"""Tests of ``esmaml.config``: loading, overrides, and every error path (each names the key and
what would be valid), plus the component checks done by the builders."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from esmaml.config import (
    ConfigError,
    ExperimentConfig,
    check_params,
    load_config,
    to_dict,
    to_yaml,
)
from esmaml.training.builders import (
    build_adaptation,
    build_family,
    build_learner,
    build_optimizer,
)

ROOT = Path(__file__).resolve().parents[1]
SINE = ROOT / "configs" / "sine.yaml"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# loading


def test_defaults_without_a_file() -> None:
    config = load_config()
    assert isinstance(config, ExperimentConfig)
    assert config == ExperimentConfig()


def test_sine_config_loads_and_overrides_apply() -> None:
    config = load_config(
        SINE,
        [
            "iterations=7",
            "evaluation.every=2",
            "meta.params.num_perturbations=8",
            "adaptation.params.num_queries=5",
            "task.params.hidden=[8,8]",
            "optimizer.lr=0.1",
            "wandb.tags=[a,b]",
        ],
    )
    assert config.name == "sine"
    assert config.iterations == 7
    assert config.evaluation.every == 2
    assert config.meta.params["num_perturbations"] == 8
    assert config.adaptation.params["num_queries"] == 5
    assert config.adaptation.params["sigma"] == 0.02  # the file's other params are kept
    assert list(config.task.params["hidden"]) == [8, 8]
    assert config.optimizer.lr == 0.1
    assert config.wandb.tags == ["a", "b"]


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "iterations: 3\n", "my_run.yaml")).name == "my_run"
    assert load_config(write(tmp_path, "name: given\n", "other.yaml")).name == "given"
    # An empty file would train the schema defaults under the name "empty": refused.
    with pytest.raises(ConfigError, match=r"empty\.yaml' is empty; start from a file in configs/"):
        load_config(write(tmp_path, "", "empty.yaml"))
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write(tmp_path, "# only a comment\n", "comment.yaml"))


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = load_config(SINE, ["iterations=3", "task.params.hidden=[4]"])
    again = load_config(write(tmp_path, to_yaml(config)))
    assert to_dict(again) == to_dict(config)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------------------------
# error paths: files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory, not a YAML file"):
        load_config(tmp_path)  # a directory is not a config file


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_file_that_is_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exp\.yaml' is not valid YAML"):
        load_config(write(tmp_path, "iterations: [1\n  task: : x\n"))


def test_unknown_key_in_file_lists_near_matches(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "iteratons: 5\n"))
    message = str(info.value)
    assert "unknown key 'iteratons'" in message
    assert "did you mean 'iterations'" in message
    assert "Valid: adaptation, checkpoint" in message


def test_unknown_nested_key_in_file_lists_near_matches(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "task:\n  familly: sine\n"))
    message = str(info.value)
    assert "unknown key 'task.familly'" in message
    assert "did you mean 'family'" in message
    assert "Valid: family, params, test_pool, train_pool" in message


def test_wrong_type_in_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'evaluation\.every' has the wrong type"):
        load_config(write(tmp_path, "evaluation:\n  every: often\n"))


def test_unresolvable_interpolation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'name': cannot resolve an interpolation"):
        load_config(write(tmp_path, "name: ${missing}\n"))


# --------------------------------------------------------------------------------------------
# error paths: overrides


@pytest.mark.parametrize(
    ("override", "pieces"),
    [
        ("iteratons=3", ["unknown key 'iteratons'", "did you mean 'iterations'"]),
        ("task.familly=sine", ["unknown key 'task.familly'", "did you mean 'family'"]),
        ("evaluation.evry=3", ["unknown key 'evaluation.evry'", "did you mean 'every'"]),
        ("nothing.here=1", ["unknown key 'nothing.here'", "Valid: adaptation"]),
    ],
)
def test_unknown_override_key_lists_near_matches(override: str, pieces: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(SINE, [override])
    assert f"override '{override}'" in str(info.value)
    for piece in pieces:
        assert piece in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("iterations=abc", "iterations"),
        ("iterations=1.5", "iterations"),
        ("seed=x", "seed"),
        ("progress=maybe", "progress"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("adaptation.params=foo", "adaptation.params"),
        ("evaluation.num_steps=two", "evaluation.num_steps"),
    ],
)
def test_wrong_type_override_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"override '{override}': '{key}' has the wrong type"):
        load_config(SINE, [override])


def test_scalar_for_a_section_is_a_clear_type_error() -> None:
    with pytest.raises(ConfigError, match=r"override 'task=5': wrong type: .*TaskConfig"):
        load_config(SINE, ["task=5"])


@pytest.mark.parametrize("override", ["iterations", "iterations:3", ""])
def test_override_without_equals_sign(override: str) -> None:
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(SINE, [override])


def test_override_value_that_is_not_yaml() -> None:
    with pytest.raises(ConfigError, match=r"override 'task.params.hidden=\[1': .*not valid YAML"):
        load_config(SINE, ["task.params.hidden=[1"])


def test_override_with_unresolvable_interpolation() -> None:
    with pytest.raises(ConfigError, match=r"'iterations': cannot resolve an interpolation"):
        load_config(SINE, ["iterations=${nope}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("iterations=0", r"iterations=0 is invalid; it must be an int >= 1"),
        ("evaluation.every=0", r"evaluation.every=0 is invalid"),
        ("evaluation.num_tasks=-3", r"evaluation.num_tasks=-3 is invalid"),
        ("evaluation.num_steps=-1", r"evaluation.num_steps=-1 is invalid"),
        ("checkpoint.every=0", r"checkpoint.every=0 is invalid"),
        ("optimizer.lr=0", r"optimizer.lr=0.0 is invalid; it must be a positive finite number"),
        ("optimizer.lr=inf", r"optimizer.lr=inf is invalid; it must be a positive finite number"),
        ("seed=-1", r"seed=-1 is invalid; it must be an int in \[0, 9223372036854775807\]"),
        ("task.train_pool=0", r"task.train_pool=0 is invalid; it must be -1 or >= 1"),
        ("task.test_pool=-5", r"task.test_pool=-5 is invalid"),
        ("wandb.mode=loud", r"wandb.mode='loud' is invalid; it must be one of online"),
        ("evaluator.backend=mpi", r"evaluator.backend='mpi' is invalid; it must be local or ray"),
    ],
)
def test_invalid_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(SINE, [override])


def test_valid_edge_values() -> None:
    config = load_config(
        SINE, ["task.train_pool=-1", "task.test_pool=1", "evaluation.num_steps=0", "iterations=1"]
    )
    assert config.evaluation.num_steps == 0


# --------------------------------------------------------------------------------------------
# check_params


def target(alpha: float, beta: int = 1, *, gamma: str = "x", family: Any = None) -> None:
    return None


def test_check_params_accepts_known_keys() -> None:
    params = {"alpha": 1.0, "gamma": "y"}
    assert check_params("thing.params", target, params) == params
    assert check_params("thing.params", target, params) is not params  # a copy


def test_check_params_unknown_key_lists_near_matches() -> None:
    with pytest.raises(ConfigError) as info:
        check_params("thing.params", target, {"gama": 1})
    message = str(info.value)
    assert "thing.params: unknown key 'gama'" in message
    assert "did you mean 'gamma'" in message
    assert "Valid: alpha, beta, family, gamma" in message


def test_check_params_skip_and_var_keyword() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'family'.*Valid: alpha, beta, gamma"):
        check_params("thing.params", target, {"family": 1}, skip=("family",))

    def anything(a: int, **kwargs: Any) -> None:
        return None

    assert check_params("x", anything, {"whatever": 1}) == {"whatever": 1}


def test_check_params_without_near_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'zzzz'\. Valid: alpha"):
        check_params("thing.params", target, {"zzzz": 1})


# --------------------------------------------------------------------------------------------
# builders: unknown components and component options


@pytest.mark.parametrize(
    ("override", "build", "pieces"),
    [
        (
            "adaptation.operator=foo",
            "adaptation",
            ["adaptation.operator='foo' is unknown", "es_gradient", "hill_climbing", "identity"],
        ),
        (
            "adaptation.operator=hill_climb",
            "adaptation",
            ["did you mean 'hill_climbing'", "Valid: es_gradient, gradient_descent"],
        ),
        (
            "adaptation.params.num_querie=3",
            "adaptation",
            ["adaptation.params: unknown key 'num_querie'", "did you mean 'num_queries'"],
        ),
        ("task.family=sin", "family", ["task.family='sin' is unknown", "did you mean 'sine'"]),
        ("task.params.shotz=3", "family", ["task.params: unknown key 'shotz'", "'shots'"]),
        ("optimizer.name=adm", "optimizer", ["optimizer.name='adm' is unknown", "'adam'"]),
        ("optimizer.params.betaz=[0.9]", "optimizer", ["unknown key 'betaz'", "'betas'"]),
        ("meta.algorithm=es", "learner", ["meta.algorithm='es' is unknown", "es_maml"]),
        (
            "meta.params.num_perturbation=3",
            "learner",
            ["meta.params: unknown key 'num_perturbation'", "did you mean 'num_perturbations'"],
        ),
        ("meta.params.family=x", "learner", ["meta.params: unknown key 'family'"]),
    ],
)
def test_builders_reject_unknown_components_and_options(
    override: str, build: str, pieces: list[str]
) -> None:
    config = load_config(SINE, [override, "task.params.hidden=[4]"])
    with pytest.raises(ConfigError) as info:
        if build == "family":
            build_family(config)
        elif build == "adaptation":
            build_adaptation(config)
        elif build == "optimizer":
            build_optimizer(config)
        else:
            family = build_family(config)
            build_learner(config, family, build_adaptation(config), torch.Generator())
    for piece in pieces:
        assert piece in str(info.value)


def test_builders_build_the_sine_config() -> None:
    config = load_config(SINE, ["task.params.hidden=[4]", "meta.params.num_perturbations=4"])
    family = build_family(config)
    adaptation = build_adaptation(config)
    learner = build_learner(config, family, adaptation, torch.Generator().manual_seed(0))
    assert learner.parameters_flat().shape == (family.num_params,)
    assert type(adaptation).__name__ == "ESGradientAdaptation"
    assert dataclasses.is_dataclass(config)
    optimizer = build_optimizer(config)([torch.zeros(2, requires_grad=True)])
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == config.optimizer.lr
