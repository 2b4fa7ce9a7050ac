"""RL task families: a meta-RL environment plus a flat-parameter policy, as a TaskFamily.

``loss(params [*B, D], tasks, task_ids [*B])`` is minus the mean return of E episodes of each
(parameters, task) pair, all in one batched rollout. Population members that share a task share
its start states (common random numbers). Observations are normalised with running statistics
that are frozen within an iteration and folded in by ``end_iteration``, which re-expresses the
policy so that it acts exactly as before (see :mod:`esmaml.rl.normalization`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from esmaml.registry import resolve
from esmaml.rl.env_resolution import GymMetaEnv, _takes_split, resolve_env
from esmaml.rl.normalization import CollectedStatistics, ObservationNormalizer, RunningStats
from esmaml.rl.policies import Policy
from esmaml.rl.rollout import RolloutResult, rollout, rollout_gym
from esmaml.seeding import substream
from esmaml.tasks.base import Phase, Split, TaskFamily, Tasks, check_task_ids


class RLFamily(TaskFamily):
    """Meta-RL on a registered esmaml environment.

    Args:
        env: a registered env name, ``module:Name`` of a :class:`envs.BatchedMetaEnv` or
            ``gymnasium.Env`` class, or a gymnasium id (see :func:`resolve_env`). Built in: the
            torch-native ``Navigation2D``, ``FourCorners``, ``SixCircles``,
            ``PointMassGoalVelocity``, ``MetaPendulum``, ``MetaCartPole``) or a MuJoCo meta-task
            (``HalfCheetahForwardBackward``, ``HalfCheetahGoalVelocity``, ``AntForwardBackward``,
            ``AntDirection``; on the CPU, stepped by MuJoCo's threaded batch, see
            ``mujoco_backend``).
        env_params: constructor keywords of the environment.
        hidden: hidden widths of the policy (``()`` is the paper's linear policy).
        activation: hidden activation.
        episodes: episodes per (parameters, task) evaluation.
        horizon: episode length (default: the environment's). MuJoCo sub-envs get it as their
            ``max_episode_steps`` unless ``env_params`` sets one.
        normalize_observations: running observation normalisation: ``true`` (or
            ``preserving``) learns the statistics from the query rollouts of training and keeps
            the policy's function when they move; ``reference`` learns them the same way and
            leaves theta as it is (the google-research code); ``legacy`` learns them from every
            rollout and leaves theta as it is (esmaml's old behaviour); ``false`` is off.
        parametrization: ``scaled`` (``scale * tanh`` onto the action box, zero output layer)
            or ``reference`` (the google-research policy: ``tanh``, clipped by the env, He-normal
            init); see :class:`esmaml.rl.policies.MLPPolicy`.
        device: where torch-native environments run.
        gym_chunk: sub-environments per gymnasium vector env (MuJoCo, gymnasium backend).
        mujoco_backend: how the MuJoCo meta-tasks run: ``'batch'`` (default: all rollouts of
            a loss call as rows of one :class:`envs.mujoco_batch.MujocoMetaBatch`, threaded,
            gymnasium's physics bit for bit, see :mod:`esmaml.rl.rollout_mujoco`; with a CUDA
            ``device``, MuJoCo Warp instead), ``'warp'`` (MuJoCo Warp on ``device``, the CPU
            included, for development; needs the mujoco-warp package; unverified on a GPU, see
            :mod:`envs.mujoco_warp`) or ``'gymnasium'`` (gymnasium's ``SyncVectorEnv`` in
            chunks of ``gym_chunk``, CPU).
        mujoco_threads: physics threads of the batch (default: the cores given to the
            process, or to the Ray worker).
        policy: the policy class, by registered name (``mlp``: :class:`MLPPolicy`) or
            ``module:Name`` of an :class:`esmaml.rl.policies.Policy`.
        action_noise: standard deviation ``s`` of a Gaussian policy: every rollout (training
            and evaluation) acts ``a_t = pi_theta(o_t) + s * xi_t``, ``xi_t ~ N(0, I)``, before
            the env's clip. ``0`` (default) is the paper's deterministic policy. The noise is
            drawn per task, episode and step from the rollout's generator, like the start
            states, so members that share a task share it (common random numbers) and a
            member's rollout does not depend on the rest of its batch. Torch-native envs only.
    """

    stochastic = True
    differentiable = False
    reports_return = True

    def __init__(
        self,
        env: str = "Navigation2D",
        env_params: Mapping[str, Any] | None = None,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        episodes: int = 1,
        horizon: int | None = None,
        normalize_observations: bool | str = True,
        device: str | torch.device = "cpu",
        gym_chunk: int = 16,
        parametrization: str = "scaled",
        mujoco_backend: str = "batch",
        mujoco_threads: int | None = None,
        policy: str = "mlp",
        action_noise: float = 0.0,
    ):
        self._device = torch.device(device)
        if isinstance(action_noise, bool) or not isinstance(action_noise, (int, float)):
            raise TypeError(f"action_noise must be a float >= 0, got {action_noise!r}")
        if not action_noise >= 0 or action_noise == float("inf"):
            raise ValueError(f"action_noise must be a finite float >= 0, got {action_noise!r}")
        self.action_noise = float(action_noise)
        self.episodes = int(episodes)
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        self.gym_chunk = int(gym_chunk)
        params = dict(env_params or {})
        target = resolve_env(env)
        self.meta_env = True
        if not isinstance(target, str):
            # Per-step NaN checks cost a host sync; a NaN policy output still surfaces as a NaN
            # return, which the zero-order NaN policy catches.
            params.setdefault("check_finite", False)
            self.env = target(**params)
            self.gym_id = None
            obs_dim, act_dim = self.env.observation_dim, self.env.action_dim
            low, high = self.env.action_low, self.env.action_high
            default_horizon = self.env.max_episode_steps
        else:
            from envs.registration import MUJOCO_ENV_IDS

            if self.action_noise:
                raise ValueError(
                    f"action_noise={action_noise} needs a torch-native env (Navigation2D, "
                    f"FourCorners, ...); {env!r} runs through gymnasium/MuJoCo, where the "
                    "policy is deterministic: set task.params.action_noise to 0"
                )

            if target not in MUJOCO_ENV_IDS:
                mujoco_backend = "gymnasium"  # the batched paths know esmaml's MuJoCo tasks only
            if mujoco_backend not in ("batch", "warp", "gymnasium"):
                raise ValueError(
                    f"mujoco_backend must be 'batch', 'warp' or 'gymnasium', got {mujoco_backend!r}"
                )
            if mujoco_threads is not None and (
                isinstance(mujoco_threads, bool)
                or not isinstance(mujoco_threads, int)
                or mujoco_threads < 1
            ):
                raise ValueError(f"mujoco_threads must be a positive int, got {mujoco_threads!r}")
            if mujoco_backend == "batch" and self._device.type == "cuda":
                mujoco_backend = "warp"
            if mujoco_backend == "warp":
                from envs.mujoco_warp import _import_warp

                _import_warp()  # a missing package is an error now, not at the first rollout
            elif self._device.type != "cpu":
                raise ValueError(
                    f"mujoco_backend={mujoco_backend!r} runs on the CPU; use device='cpu', or "
                    "device='cuda' for MuJoCo Warp"
                )
            self.mujoco_backend, self.mujoco_threads = mujoco_backend, mujoco_threads
            self._mujoco_batch: Any = None
            self._warp_batches: dict[int, Any] = {}
            import gymnasium

            self.gym_id = target
            self.gym_params = params
            self.env = gymnasium.make(self.gym_id, **params).unwrapped
            # A plain gymnasium env (no task interface) is a one-task distribution.
            self.meta_env = isinstance(self.env, GymMetaEnv)
            self._env_splits = self.meta_env and _takes_split(self.env.sample_tasks)
            obs_dim = int(self.env.observation_space.shape[0])
            act_dim = int(self.env.action_space.shape[0])
            low, high = (
                float(self.env.action_space.low.min()),
                float(self.env.action_space.high.max()),
            )
            default_horizon = int(
                params.get("max_episode_steps")
                or gymnasium.spec(self.gym_id).max_episode_steps
                or 200
            )
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1
        ):
            # 0 would silently mean the default and a negative one crash mid-rollout.
            raise ValueError(
                f"horizon must be None (the env's default, {default_horizon}) or an int >= 1, "
                f"got {horizon!r}"
            )
        self.horizon = int(default_horizon if horizon is None else horizon)
        if self.gym_id is not None:
            # make_vec otherwise wraps each sub-env in the spec's TimeLimit, which would cut a
            # longer horizon short; a limit the user set in env_params is theirs to keep.
            self.gym_params.setdefault("max_episode_steps", self.horizon)
        policy_class = resolve("policies", policy, "task.params.policy")
        self.policy: Policy = policy_class(
            obs_dim, act_dim, hidden, activation, low, high, parametrization
        )
        self.num_params = self.policy.num_params
        modes = {
            True: "preserving",
            "preserving": "preserving",
            "reference": "reference",
            "legacy": "legacy",
        }
        if normalize_observations not in (False, *modes):
            raise ValueError(
                f"normalize_observations={normalize_observations!r} is not valid; valid: true "
                "(preserving), false, preserving, reference, legacy"
            )
        if (
            normalize_observations in (True, "preserving")
            and type(self.policy).rebase_input is Policy.rebase_input
        ):
            raise ValueError(
                f"policy={policy!r} does not define rebase_input, which "
                "normalize_observations=preserving needs; set normalize_observations to "
                "reference or false"
            )
        self.normalizer = ObservationNormalizer(
            obs_dim,
            enabled=normalize_observations is not False,
            mode=modes.get(normalize_observations, "preserving"),  # type: ignore[call-overload]
            device=self._device,
        )
        self.collect_statistics = True
        self._members: Tensor | None = None  # see members()
        self.env_steps = 0

    @property
    def device(self) -> torch.device:
        return self._device

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        return self.policy.init_params(generator).to(self._device)

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        if self.gym_id is None:
            return self.env.sample_task_params(n, generator, device=self._device)
        if not self.meta_env:
            return {"task": torch.zeros(n, 1)}
        from envs import tasks_to_params

        # The two splits of one generator draw from separate streams.
        seed = substream(int(torch.randint(0, 2**62, (), generator=generator)), split) % 2**31
        if self._env_splits:
            return tasks_to_params(self.env.sample_tasks(n, seed=seed, split=split))
        return tasks_to_params(self.env.sample_tasks(n, seed=seed))

    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        batch = params.shape[:-1]
        if params.shape[-1] != self.num_params:
            raise ValueError(
                f"params must have last dim {self.num_params}, got {tuple(params.shape)}"
            )
        check_task_ids(task_ids, tasks, batch)
        if torch.broadcast_shapes(task_ids.shape, batch) != batch:
            # e.g. [2, 4] ids for [4] params broadcast, but cannot be expanded to the batch
            raise ValueError(
                f"task_ids of shape {tuple(task_ids.shape)} does not broadcast to the parameter "
                f"batch shape {tuple(batch)}"
            )
        ids = task_ids.expand(batch).reshape(-1)
        flat = params.reshape(-1, self.num_params)
        # The reference learns the statistics from the post-adaptation query rollouts only.
        collect = (
            self.collect_statistics
            and self.normalizer.enabled
            and (phase == "query" or self.normalizer.mode == "legacy")
        )
        result = self._rollout(flat, tasks, ids, generator, collect)
        self.env_steps += result.steps
        if collect:
            episode_stats = result.episode_observation_stats
            assert episode_stats is not None
            keys = self._member_keys(batch)
            if keys is None:
                self.normalizer.observe(episode_stats.reduce())
            else:
                self.normalizer.observe(episode_stats, keys)
        return (-result.returns).reshape(batch)

    @contextlib.contextmanager
    def members(self, rows: Tensor) -> Iterator[None]:
        """Within: loss calls evaluate population members ``rows`` along their first batch
        dim, and file each episode's observation statistics under its member, so that the
        iteration's statistics do not depend on how the population was split (see
        :meth:`esmaml.rl.normalization.ObservationNormalizer.observe`)."""
        previous, self._members = self._members, rows.detach().to("cpu", torch.long)
        try:
            yield
        finally:
            self._members = previous

    def _member_keys(self, batch: torch.Size) -> Tensor | None:
        """The population member of each episode of a loss call on ``batch``, or None outside
        :meth:`members` (or for a batch that is not one row per member)."""
        members = self._members
        if members is None or len(batch) == 0 or batch[0] != len(members):
            return None
        per_member = math.prod(batch[1:]) * self.episodes
        return members.repeat_interleave(per_member).to(self._device)

    def _rollout(
        self,
        params: Tensor,
        tasks: Tasks,
        ids: Tensor,
        generator: torch.Generator | None,
        observation_stats: bool = True,
    ) -> RolloutResult:
        if self.gym_id is None:
            # The env runs in the parameters' dtype: float32 tasks with float64 params would
            # give float64 actions for a float32 state.
            tasks = {k: v.to(params.dtype) for k, v in tasks.items()}
            n_tasks = next(iter(tasks.values())).shape[0]
            per_task = {
                k: v.unsqueeze(1).expand(n_tasks, self.episodes, *v.shape[1:])
                for k, v in tasks.items()
            }
            starts = self.env.reset(per_task, generator)
            initial = {k: v[ids] for k, v in starts.items()}
            task = {k: v[ids] for k, v in tasks.items()}
            noise = None
            if self.action_noise:
                shape = (self.horizon, n_tasks, self.episodes, self.policy.action_dim)
                xi = torch.randn(shape, generator=generator, dtype=params.dtype)
                noise = self.action_noise * xi.to(params.device)[:, ids]
            return rollout(
                self.env,
                self.policy,
                params,
                task,
                episodes=self.episodes,
                horizon=self.horizon,
                normalize=self.normalizer,
                initial_state=initial,
                observation_stats=observation_stats,
                action_noise=noise,
            )
        import gymnasium

        from envs import params_to_tasks

        task_list = params_to_tasks(tasks) if self.meta_env else [{}] * len(tasks["task"])
        seed = (
            int(torch.randint(0, 2**31 - 1, (), generator=generator))
            if generator is not None
            else 0
        )
        if self.mujoco_backend in ("batch", "warp"):
            return self._rollout_mujoco_batch(params, task_list, ids, seed)
        return rollout_gym(
            lambda k: gymnasium.make_vec(
                self.gym_id,
                num_envs=k,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
                **self.gym_params,
            ),
            self.policy,
            params,
            [task_list[i] for i in ids.tolist()],
            episodes=self.episodes,
            horizon=self.horizon,
            normalize=self.normalizer,
            chunk=self.gym_chunk,
            seeds=[seed + int(i) for i in ids.tolist()],
        )

    def _rollout_mujoco_batch(
        self, params: Tensor, task_list: list[dict[str, Any]], ids: Tensor, seed: int
    ) -> RolloutResult:
        """The MuJoCo rollouts as rows of one batch (same seeds as rollout_gym)."""
        from esmaml.rl.rollout_mujoco import rollout_mujoco, rollout_mujoco_warp

        rows = params.shape[0] * self.episodes
        # gymnasium.make's TimeLimit argument is the horizon's business here.
        kwargs = {k: v for k, v in self.gym_params.items() if k != "max_episode_steps"}
        if self.mujoco_backend == "warp":
            from envs.mujoco_warp import MujocoWarpMetaBatch

            # one set of worlds per call size (ES-MAML makes a few): all worlds always step
            batch = self._warp_batches.get(rows)
            if batch is None:
                batch = MujocoWarpMetaBatch(self.gym_id, rows, device=self._device, **kwargs)
                self._warp_batches[rows] = batch
            run = rollout_mujoco_warp
        else:
            from envs.mujoco_batch import MujocoMetaBatch

            if self._mujoco_batch is None or self._mujoco_batch.num_sims < rows:
                self._mujoco_batch = MujocoMetaBatch(
                    self.gym_id, rows, threads=self.mujoco_threads, **kwargs
                )
            batch, run = self._mujoco_batch, rollout_mujoco
        return run(
            batch,
            self.policy,
            params,
            [task_list[i] for i in ids.tolist()],
            episodes=self.episodes,
            horizon=min(self.horizon, int(self.gym_params["max_episode_steps"])),
            normalize=self.normalizer,
            seeds=[seed + int(i) for i in ids.tolist()],
        )

    def end_iteration(self, params: Tensor) -> Tensor:
        """Fold the iteration's observation statistics in; in ``preserving`` mode return the
        policy re-expressed for the new statistics (the same actions for every observation)."""
        moved = self.normalizer.enabled and float(self.normalizer.pending.count) > 0
        before = self.normalizer.affine()
        self.normalizer.commit()
        after = self.normalizer.affine()
        if not moved or self.normalizer.mode != "preserving" or after is None:
            return params
        if before is None:  # the identity transform until the first statistics
            before = (torch.zeros_like(after[0]), torch.ones_like(after[1]))
        return self.policy.rebase_input(params, before, after)

    def training_metrics(self) -> dict[str, float]:
        """``obs_std_mean``: the mean over dimensions of the std the observations are divided
        by (the committed statistics; 1 while the transform is the identity)."""
        if not self.normalizer.enabled:
            return {}
        affine = self.normalizer.affine()
        std = 1.0 if affine is None else float(affine[1].reciprocal().mean())
        return {"obs_std_mean": std}

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Evaluation: rollouts do not feed the normalisation statistics."""
        previous, self.collect_statistics = self.collect_statistics, False
        try:
            yield
        finally:
            self.collect_statistics = previous

    def state_dict(self) -> dict[str, Any]:
        return {"normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.normalizer.load_state_dict(state["normalizer"])

    def replica_state(self) -> dict[str, Tensor]:
        """The committed observation statistics (as a state dict)."""
        return self.normalizer.stats.state_dict()

    def load_replica_state(self, state: dict[str, Tensor] | None) -> None:
        """Adopt the driver's committed statistics; pending ones start afresh."""
        if state is None:
            return
        stats = {key: value.to(self._device) for key, value in state.items()}
        pending = RunningStats.zeros(self.normalizer.dim, self._device).state_dict()
        self.normalizer.load_state_dict({"stats": stats, "pending": pending})

    def collected_state(self) -> CollectedStatistics:
        """The statistics of the observations seen since :meth:`load_replica_state`, per
        population member (unmerged: the driver merges everyone's in member order)."""
        return self.normalizer.collected()

    def merge_collected_state(self, state: CollectedStatistics | None) -> None:
        if state is not None and self.collect_statistics:
            self.normalizer.observe_collected(state)

    def close(self) -> None:
        """Drop the MuJoCo batches (rebuilt on the next rollout) and the gymnasium env."""
        if self.gym_id is not None:
            self._mujoco_batch, self._warp_batches = None, {}
