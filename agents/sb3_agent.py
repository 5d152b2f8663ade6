"""Stable-Baselines3 policies as agents: algorithms by name, zoo-style hyperparameters, loading.

* :func:`get_algorithm_class` finds any Stable-Baselines3 or sb3-contrib algorithm by name.
* :func:`load_hyperparams` reads ``agents/hyperparams/<algo>.yml``, rl-baselines3-zoo files (see
  *Hyperparameter files* below), and applies command-line overrides.
* :func:`sb3_constructor_kwargs` turns those hyperparameters into the algorithm's arguments.
* :class:`SB3Agent` wraps a trained model (and its ``VecNormalize`` statistics) as an
  :class:`agents.base.Agent`, so ``evaluate.py`` benchmarks it like any other policy.

**Hyperparameter files.** One YAML file per algorithm (``ppo.yml``, ``a2c.yml``, ...; an algorithm
without a file uses ``default.yml``), read exactly as rl-baselines3-zoo reads its ``-conf`` files, so
the same file trains with ``train_agent.py`` and with ``python -m rl_zoo3.train``. Each entry is keyed
by environment id (``dus_env/Synthetic-v0``) or is ``default``, and is *complete*: the entry of the
env id is used as it is, nothing is merged. To list only what differs, an entry copies another with
a YAML anchor and merge key, which ``yaml.safe_load`` (the zoo's loader too) resolves::

    default: &default
      n_envs: 64
      ...
    dus_env/Synthetic3-v0:
      <<: *default
      n_timesteps: 40_000

An env id without an entry gets the ``default`` entry (rl-baselines3-zoo does the same, printing
"Using 'default' hyperparameters"). Keys are the algorithm's constructor arguments (``policy``,
``n_steps``, ``learning_rate``, ``gamma``, ...) plus the run keys both drivers read:

=================  ==============================================================================
key                meaning
=================  ==============================================================================
``n_envs``         number of parallel training environments
``n_timesteps``    total environment steps of a run (over all environments)
``normalize``      ``true`` / ``false``, or a dict of ``VecNormalize`` arguments (``norm_obs``,
                   ``norm_reward``, ``clip_obs``, ...) as YAML or as the zoo's string
                   ``"dict(norm_obs=True, norm_reward=False)"``
``policy``         policy name, e.g. ``MlpPolicy``; the zoo requires it, ``train_agent.py``
                   defaults to the algorithm's MLP policy
``policy_kwargs``  a dict, or a string as in the zoo: ``"dict(net_arch=[64, 64], activation_fn=nn.Tanh)"``
=================  ==============================================================================

A float-valued schedule (``learning_rate``, ``clip_range``, ``clip_range_vf``) may be written
``lin_3e-4``: linear decay from 3e-4 to 0 over the run, as in the zoo.

**Security.** SB3 ``.zip`` models and ``VecNormalize`` ``.pkl`` files are read with pickle, which
can execute arbitrary code while loading: only load files you trust (e.g. your own runs).
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize

from dus_env.observation import ObservationLayout
from dus_env.quantities import QuantityMapping

from . import cli
from .base import Agent, check_modalities
from .cli import yaml_number
from .errors import UsageError
from .run_files import CONFIG_FILE, SB3_CHECKPOINT_PREFIX, SB3_FINAL_FILE, VECNORMALIZE_FILE, legacy_dus_r_message
from .trust import allow_pickle_load
from .zoo_run import check_env_kwargs, find_zoo_run, zoo_runs_below

#: rl-baselines3-zoo's names for sb3-contrib algorithms, accepted as well as the class names.
ALGORITHM_ALIASES = {"ppo_lstm": "recurrentppo", "ppo_mask": "maskableppo"}

#: Where ``<algo>.yml`` files live; ``default.yml`` serves algorithms without their own file.
HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

#: Hyperparameters consumed by ``train_agent.py`` itself rather than passed to an algorithm.
RUN_KEYS = frozenset({"n_envs", "n_timesteps"})
SB3_RUN_KEYS = RUN_KEYS | {"normalize"}

#: Constructor arguments that ``train_agent.py`` sets itself (from its options), not the files.
_DRIVER_OWNED_ARGS = frozenset({"self", "env", "seed", "tensorboard_log", "_init_setup_model", "kwargs", "args"})

#: Schedules that accept ``lin_<value>``.
_SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")

_CHECKPOINT_NAME = re.compile(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip$")


# -- algorithms -----------------------------------------------------------------------------------


def available_algorithms() -> dict[str, type[BaseAlgorithm]]:
    """Every Stable-Baselines3 and sb3-contrib algorithm, and DUS-R (``reinforce``, :mod:`agents.reinforce`),
    keyed by lower-case class name."""
    import sb3_contrib
    import stable_baselines3

    from .reinforce import Reinforce

    found: dict[str, type[BaseAlgorithm]] = {"reinforce": Reinforce}
    for module in (stable_baselines3, sb3_contrib):
        for attribute in dir(module):
            value = getattr(module, attribute)
            if isinstance(value, type) and issubclass(value, BaseAlgorithm):
                found[attribute.lower()] = value
    return dict(sorted(found.items()))


def get_algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The SB3 / sb3-contrib algorithm called ``name``, case-insensitive (``"PPO"``, ``"recurrentppo"``).

    Dashes and underscores are ignored (``recurrent_ppo``), and the zoo names ``ppo_lstm`` and
    ``ppo_mask`` are accepted. Whether an algorithm suits this environment's continuous actions is
    checked when it is built (DQN and QR-DQN, for instance, need discrete actions).

    :raises ValueError: unknown name; the message lists the available ones.
    """
    algorithms = available_algorithms()
    key = name.strip().lower()
    key = ALGORITHM_ALIASES.get(key, key).replace("-", "").replace("_", "")
    if key not in algorithms:
        raise ValueError(f"unknown algorithm {name!r}: available are {', '.join(algorithms)}")
    return algorithms[key]


def default_policy(algorithm: type[BaseAlgorithm]) -> str:
    """The algorithm's MLP policy name: ``MlpPolicy``, or e.g. ``MlpLstmPolicy`` for RecurrentPPO."""
    aliases = list(algorithm.policy_aliases)
    if "MlpPolicy" in aliases:
        return "MlpPolicy"
    mlp = [alias for alias in aliases if alias.startswith("Mlp")]
    return mlp[0] if mlp else aliases[0]


# -- hyperparameters ------------------------------------------------------------------------------


def hyperparams_file(algo: str, directory: str | Path = HYPERPARAMS_DIR) -> Path:
    """``<directory>/<algo>.yml`` if it exists, else ``<directory>/default.yml``."""
    directory = Path(directory)
    own = directory / f"{algo.lower()}.yml"
    return own if own.is_file() else directory / "default.yml"


def load_hyperparams(
    algo: str,
    env_id: str,
    overrides: Mapping[str, Any] | None = None,
    directory: str | Path = HYPERPARAMS_DIR,
) -> dict[str, Any]:
    """Hyperparameters of ``algo`` on ``env_id``: the file's entry for ``env_id`` (else its ``default``), then ``overrides``.

    The entry is used as it is, as rl-baselines3-zoo uses it: nothing is merged from ``default``
    (entries share settings through YAML anchors, see the module docstring). An env id without an
    entry gets the ``default`` entry, also as in the zoo. Overrides replace whole top-level values
    (a ``policy_kwargs`` override replaces the file's ``policy_kwargs``). Keys are not checked here:
    see :func:`check_hyperparam_keys`.

    :param algo: algorithm name as given on the command line (``ppo``, ``reinforce``, ...).
    :param env_id: Gymnasium id, e.g. ``dus_env/Synthetic-v0`` (``Synthetic-v0`` finds the same entry).
    :param overrides: values that win over the file, e.g. from ``--hyperparams``.
    :param directory: folder holding the ``.yml`` files.
    :raises UsageError: missing or malformed file, or neither a ``default`` nor an ``env_id`` entry.
    """
    path = hyperparams_file(algo, directory)
    if not path.is_file():
        raise UsageError(f"no hyperparameter file for {algo!r}: expected {path.with_name(algo.lower() + '.yml')} or {path}")
    try:
        entries = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"hyperparameter file {path} is not valid YAML: {error}") from error
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise UsageError(f"hyperparameter file {path} must map 'default' and env ids to dicts of hyperparameters")
    entry = zoo_entry(entries, env_id)
    if entry is None:
        raise UsageError(f"{path} has neither a 'default' entry nor one for {env_id!r}; it has {sorted(entries)}")
    return {name: yaml_number(value) for name, value in {**entry, **dict(overrides or {})}.items()}


def zoo_entry(entries: Mapping[str, Any], env_id: str) -> dict[str, Any] | None:
    """The entry of a zoo-style hyperparameter file (``entries``: env ids or ``default`` -> dicts) that
    rl-baselines3-zoo uses for ``env_id``: its own (``Synthetic-v0`` also found as
    ``dus_env/Synthetic-v0``), else ``default``; ``None`` when there is neither. Every reader of such
    files (``agents/hyperparams/<algo>.yml``, ``--hyperparams FILE``) picks through this one function.

    A deep copy: entries written with ``<<: *default`` share their nested values (``normalize``, ...).
    """
    from dus_env.registration import NAMESPACE

    names = [env_id] if "/" in env_id else [env_id, f"{NAMESPACE}/{env_id}"]
    key = next((name for name in names if name in entries), "default")
    return copy.deepcopy(dict(entries[key])) if key in entries else None


def parse_key_values(pairs: Sequence[str], what: str = "--hyperparams") -> dict[str, Any]:
    """``["n_steps=64", "policy_kwargs={net_arch: [32]}"]`` -> ``{"n_steps": 64, ...}``; values are YAML.

    :raises UsageError: an item without ``=`` or with a value that is not valid YAML.
    """
    return cli.parse_key_values(pairs, what, UsageError, example="learning_rate=3e-4")


def check_hyperparam_keys(hyperparams: Mapping[str, Any], accepted: set[str] | frozenset[str], owner: str) -> None:
    """Refuse keys that ``owner`` (e.g. ``"PPO"``) does not take, suggesting the closest accepted one."""
    for key in hyperparams:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"unknown hyperparameter {key!r} for {owner}: {hint}accepted are {', '.join(sorted(accepted))}")


def run_settings(hyperparams: Mapping[str, Any]) -> tuple[int, int]:
    """``(n_envs, n_timesteps)`` from the hyperparameters, validated (``1e5``-style floats accepted)."""
    values = []
    for key in ("n_envs", "n_timesteps"):
        if key not in hyperparams:
            raise UsageError(f"hyperparameter {key!r} is missing: set it in the .yml file or with --hyperparams {key}=...")
        value = hyperparams[key]
        number = _as_count(value)
        if number is None or number < 1:
            raise UsageError(f"hyperparameter {key}={value!r} is invalid: expected a positive integer")
        values.append(number)
    return values[0], values[1]


def sb3_constructor_kwargs(algorithm: type[BaseAlgorithm], hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments for ``algorithm(env=..., **kwargs)`` from the hyperparameters (run keys dropped).

    Checks every key against the constructor, parses ``policy_kwargs`` strings and ``lin_``
    schedules, and fills in the default MLP policy.

    :raises UsageError: a key the algorithm does not take, or a value that cannot be parsed.
    """
    accepted = set(inspect.signature(algorithm.__init__).parameters) - _DRIVER_OWNED_ARGS
    check_hyperparam_keys(hyperparams, accepted | SB3_RUN_KEYS, algorithm.__name__)
    kwargs = {key: value for key, value in hyperparams.items() if key not in SB3_RUN_KEYS}
    kwargs.setdefault("policy", default_policy(algorithm))
    policy = kwargs["policy"]
    if isinstance(policy, str) and "." not in policy and policy not in algorithm.policy_aliases:
        raise UsageError(
            f"hyperparameter policy={policy!r} is not a {algorithm.__name__} policy: accepted are "
            f"{', '.join(algorithm.policy_aliases)} (e.g. --hyperparams policy={default_policy(algorithm)})"
        )
    if kwargs.get("policy_kwargs") is not None:
        kwargs["policy_kwargs"] = parse_policy_kwargs(kwargs["policy_kwargs"])
    for key in _SCHEDULE_KEYS:
        if isinstance(kwargs.get(key), str):
            kwargs[key] = _parse_schedule(key, kwargs[key])
    return kwargs


def vec_normalize_kwargs(hyperparams: Mapping[str, Any]) -> dict[str, Any] | None:
    """``VecNormalize`` arguments from ``normalize`` (``None`` = no normalisation).

    ``normalize: true`` normalises observations and rewards. The reward normaliser discounts with
    the algorithm's ``gamma`` when one is set, as in the zoo, so its scale matches the returns
    the value function learns.
    """
    given = normalize = hyperparams.get("normalize", False)
    expected = (
        f"hyperparameter normalize={given!r} is invalid: expected true, false or a dict of VecNormalize arguments "
        "(in YAML, or as the zoo's string 'dict(norm_obs=True, norm_reward=False)')"
    )
    if isinstance(normalize, str):
        try:
            normalize = _parse_python_dict("normalize", normalize)
        except UsageError as error:
            raise UsageError(f"{expected}: {error}") from error
    if normalize is False or normalize is None:
        return None
    if normalize is True:
        kwargs: dict[str, Any] = {}
    elif isinstance(normalize, dict):
        kwargs = dict(normalize)
    else:
        raise UsageError(expected)
    accepted = set(inspect.signature(VecNormalize.__init__).parameters) - {"self", "venv", "training"}
    check_hyperparam_keys(kwargs, accepted, "normalize (VecNormalize)")
    if "gamma" in hyperparams:
        kwargs.setdefault("gamma", hyperparams["gamma"])
    return kwargs


def parse_policy_kwargs(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` from the zoo's string form or a dict, without ``eval``.

    The string may use ``dict(...)``, literals, lists, and torch classes written ``nn.Tanh``,
    ``th.nn.ReLU`` or ``torch.optim.Adam``. In the dict form, ``activation_fn`` and
    ``optimizer_class`` may be strings (``"nn.Tanh"``, ``"Tanh"``, ``"Adam"``).

    :raises UsageError: anything else (function calls, unknown names, ...).
    """
    if isinstance(value, str):
        parsed = _parse_python_dict("policy_kwargs", value)
    elif isinstance(value, Mapping):
        parsed = dict(value)
        for key, module in (("activation_fn", torch.nn), ("optimizer_class", torch.optim)):
            if isinstance(parsed.get(key), str):
                name = parsed[key]
                parsed[key] = _torch_class(name if "." in name else f"torch.{module.__name__.split('.')[-1]}.{name}", value)
    else:
        raise UsageError(f"policy_kwargs={value!r} is invalid: expected a dict or a string like 'dict(net_arch=[64, 64])'")
    if not isinstance(parsed, dict):
        raise UsageError(f"policy_kwargs {value!r} is invalid: it must give a dict")
    return parsed


def _parse_python_dict(key: str, text: str) -> Any:
    """The value of a zoo-style Python string (``"dict(net_arch=[64])"``) of hyperparameter ``key``, without ``eval``.

    Why not ``eval`` as the zoo does: a hyperparameter file or an override would then run any code.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise UsageError(f"{key} {text!r} is not a valid expression: {error.msg}") from error
    return _literal(tree.body, text, key)


def _literal(node: ast.AST, source: str, key: str = "policy_kwargs") -> Any:
    """Evaluate the safe subset of Python that zoo-style strings (``policy_kwargs``, ``normalize``) use."""
    if isinstance(node, ast.Constant):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
    ):
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item, source, key) for item in node.elts]
    if isinstance(node, ast.Dict):
        keys = [k for k in node.keys if k is not None]  # None: a ``**mapping`` entry, not a literal
        if len(keys) == len(node.keys):
            return {_literal(k, source, key): _literal(v, source, key) for k, v in zip(keys, node.values)}
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
        and all(kw.arg is not None for kw in node.keywords)
    ):
        return {kw.arg: _literal(kw.value, source, key) for kw in node.keywords}
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _torch_class(ast.unparse(node), source, key)
    raise UsageError(
        f"{key} {source!r}: {ast.unparse(node)!r} is not allowed; use dict(...), numbers, strings, lists and torch classes such as nn.Tanh"
    )


def _torch_class(dotted: str, source: Any, key: str = "policy_kwargs") -> type:
    """``nn.Tanh`` / ``th.nn.ReLU`` / ``torch.optim.Adam`` -> the class; nothing else is resolved."""
    root, *rest = dotted.split(".")
    roots = {"nn": torch.nn, "th": torch, "torch": torch}
    target: Any = roots.get(root)
    for part in rest:
        target = getattr(target, part, None) if target is not None else None
    allowed = isinstance(target, type) and issubclass(target, (torch.nn.Module, torch.optim.Optimizer))
    if not rest or not allowed:
        raise UsageError(f"{key} {source!r}: {dotted!r} is not a torch module or optimizer class (write e.g. nn.Tanh or th.optim.Adam)")
    return target


def _parse_schedule(key: str, text: str) -> LinearSchedule:
    if not text.startswith("lin_"):
        raise UsageError(f"hyperparameter {key}={text!r} is invalid: expected a number or lin_<number> (linear decay to 0)")
    try:
        start = float(text[len("lin_") :])
    except ValueError as error:
        raise UsageError(f"hyperparameter {key}={text!r} is invalid: {text[len('lin_') :]!r} is not a number") from error
    return LinearSchedule(start=start, end=0.0, end_fraction=1.0)


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (float, str)):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return None


# -- the agent ------------------------------------------------------------------------------------


class SB3Agent(Agent):
    """A trained Stable-Baselines3 policy, acting deterministically on (normalised) observations.

    Observations go through ``vec_normalize.normalize_obs`` (the run's frozen statistics) when the
    run used ``VecNormalize``; without it a policy trained on normalised observations would see
    values it never saw in training. Recurrent policies (RecurrentPPO) keep their hidden state
    through an episode and drop it in :meth:`reset`.

    :param layout: the env's observation layout.
    :param mapping: the env's action-to-quantity map.
    :param model: the trained algorithm.
    :param vec_normalize: the run's ``VecNormalize`` (only its statistics are used), or ``None``.
    """

    name = "sb3"

    def __init__(
        self,
        layout: ObservationLayout,
        mapping: QuantityMapping,
        model: BaseAlgorithm,
        vec_normalize: VecNormalize | None = None,
    ) -> None:
        super().__init__(layout, mapping)
        self.model = model
        self.vec_normalize = vec_normalize
        self.name = type(model).__name__.lower()
        self._state: tuple[np.ndarray, ...] | None = None
        self._episode_start = np.ones(1, dtype=bool)

    def reset(self, seed: int | None = None) -> None:
        self._state = None
        self._episode_start = np.ones(1, dtype=bool)

    def episode_copy(self) -> SB3Agent:
        """Shares the model and the normalisation statistics (read-only here); own recurrent state.

        Why not a deep copy: a ``VecNormalize`` without its env cannot be deep-copied (its attribute
        lookup forwards to the missing env and recurses), and the model need not be copied anyway.
        """
        twin = copy.copy(self)
        twin.reset()
        return twin

    def act(self, observation: np.ndarray) -> np.ndarray:
        observation = np.asarray(observation, dtype=np.float32)
        if self.vec_normalize is not None:
            observation = cast(np.ndarray, self.vec_normalize.normalize_obs(observation))  # a vector observation in, a vector out
        action, self._state = self.model.predict(observation, state=self._state, episode_start=self._episode_start, deterministic=True)
        self._episode_start = np.zeros(1, dtype=bool)
        return np.asarray(action, dtype=np.float32).reshape(self.mapping.n_modalities)

    @classmethod
    def load(cls, path: str | Path, env: gym.Env, algo: str | None = None) -> SB3Agent:
        """Load a policy written by ``train_agent.py`` or by rl-baselines3-zoo for use on ``env``.

        **Only load files you trust**: SB3 ``.zip`` models and ``.pkl`` statistics are unpickled,
        which can run arbitrary code.

        :param path: a run directory or a model ``.zip`` in one. A ``train_agent.py`` run gives its
            ``final_model.zip``; the statistics are looked up beside the model (``vecnormalize.pkl``,
            or ``<prefix>_vecnormalize_<N>_steps.pkl`` for checkpoint ``<prefix>_<N>_steps.zip``).
            A zoo run (``logs/ppo/dus_env-Synthetic-v0_1``, see :mod:`agents.zoo_run`) gives its
            ``<env>.zip``; its statistics are ``<run>/<env>/vecnormalize.pkl`` (a checkpoint's own
            ones first), its algorithm and env kwargs come from ``<run>/<env>/args.yml``.
        :param env: the environment the agent will act in; its spaces must match the policy's, and
            for a zoo run it must have the env kwargs the run trained with.
        :param algo: algorithm name (``ppo``, ``a2c``, ...); default: read from the run's files.
        :raises FileNotFoundError: no model at ``path``, or the run normalised observations and
            its statistics file is missing (scoring raw observations would be silently wrong).
        :raises ValueError: unknown algorithm, corrupt files, spaces that do not match ``env``, or a
            zoo run trained with other env kwargs.
        """
        model_path = _model_path(Path(path))
        zoo = find_zoo_run(model_path.parent)
        config = None if zoo is not None else _find_run_config(model_path)
        trained_with = zoo.algo if zoo is not None else (config or {}).get("algo")
        if not (algo or trained_with):
            raise ValueError(
                f"cannot tell which algorithm wrote {model_path} (no config.yml in its run directory): pass algo, e.g. algo='ppo'"
            )
        algorithm = get_algorithm_class(str(algo or trained_with))
        if algo and trained_with and get_algorithm_class(str(trained_with)) is not algorithm:
            raise ValueError(f"{model_path} was trained with {trained_with}, not {algo}: load it as {trained_with}")
        unwrapped = env.unwrapped
        layout: ObservationLayout = unwrapped.layout  # type: ignore[attr-defined]
        mapping: QuantityMapping = unwrapped.mapping  # type: ignore[attr-defined]
        if config is not None and "layout" in config:
            saved = ObservationLayout.from_dict(config["layout"])
            check_modalities(saved.n_modalities, mapping.n_modalities, model_path)
        if zoo is not None and getattr(unwrapped, "config", None) is not None:
            check_env_kwargs(zoo, unwrapped.config, model_path)  # type: ignore[attr-defined]
        # Inference needs neither the learning-rate nor the clip-range schedules; replacing them
        # avoids unpickling closures that may not load under another Python version.
        custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
        allow_pickle_load(model_path, "SB3 model")
        try:
            model = algorithm.load(model_path, env=None, device="cpu", custom_objects=custom_objects)
        except Exception as error:  # SB3 raises many types (BadZipFile, KeyError, pickle errors, ...)
            raise ValueError(
                f"cannot load {model_path} as a {algorithm.__name__} model (corrupt, or another algorithm?): {error}"
            ) from error
        _check_spaces(model.observation_space, env.observation_space, model.action_space, env.action_space, model_path)
        if zoo is not None:
            stats_path = _checkpoint_stats_path(model_path) or (zoo.stats if zoo.stats.is_file() else None)
            if stats_path is None and _normalises_observations(zoo.hyperparams.get("normalize")):
                raise FileNotFoundError(
                    f"the zoo run {zoo.folder} normalised observations (normalize: {zoo.hyperparams.get('normalize')!r} in "
                    f"{zoo.params / 'config.yml'}) but its statistics {zoo.stats} are missing: restore that file "
                    "(without it the policy would be scored on raw observations it was not trained on)"
                )
        else:
            stats_path = _vec_normalize_path(model_path)
            if stats_path is None and config is not None and _normalises_observations((config.get("hyperparams") or {}).get("normalize")):
                raise FileNotFoundError(
                    f"the run of {model_path} normalised observations but no {VECNORMALIZE_FILE} is beside the model: "
                    "copy the statistics file next to it (without them the policy sees inputs it was not trained on)"
                )
        vec_normalize = _load_vec_normalize(stats_path, env) if stats_path is not None else None
        return cls(layout, mapping, model, vec_normalize)


def _backend_of(run_dir: Path) -> str | None:
    """The ``backend`` a ``train_agent.py`` run folder's ``config.yml`` names (``None``: no readable one)."""
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config.get("backend", "sb3") if isinstance(config, dict) else None


def _model_path(path: Path) -> Path:
    if path.is_dir():
        if (path / SB3_FINAL_FILE).is_file():
            return path / SB3_FINAL_FILE
        if _backend_of(path) == "rllib":
            raise FileNotFoundError(
                f"{path} is an RLlib run (train_agent.py --backend rllib), not an SB3 model: "
                f"evaluate its export, exported:{path / 'exported'}"
            )
        zoo = find_zoo_run(path)
        if zoo is not None:
            if zoo.model.is_file():
                return zoo.model
            raise FileNotFoundError(
                f"rl-baselines3-zoo run {path} has no {zoo.model.name} (did training finish?): pass "
                f"{path / 'best_model.zip'} or a checkpoint {path / f'{SB3_CHECKPOINT_PREFIX}_<N>_steps.zip'}"
            )
        runs = zoo_runs_below(path)
        if runs:
            listed = ", ".join(str(run) for run in runs)
            raise FileNotFoundError(f"{path} is a folder of rl-baselines3-zoo runs, not one run: pass one of {listed}")
        legacy = legacy_dus_r_message(path, "final_model.pt") if (path / "final_model.pt").is_file() else None
        if legacy is not None:
            raise FileNotFoundError(legacy)
        raise FileNotFoundError(
            f"run directory {path} has no {SB3_FINAL_FILE} (did training finish?): pass a checkpoint such as "
            f"{path / 'checkpoints' / f'{SB3_CHECKPOINT_PREFIX}_<N>_steps.zip'} or {path / 'best_model' / 'best_model.zip'}, "
            "or resume the run"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}: expected a run directory or an SB3 .zip file")
    legacy = legacy_dus_r_message(path.parent, path.name)
    if legacy is not None:
        raise FileNotFoundError(legacy)
    return path


def _find_run_config(model_path: Path) -> dict[str, Any] | None:
    """The ``config.yml`` of the run that wrote ``model_path``: beside it, or one folder up (checkpoints/, best_model/)."""
    for folder in (model_path.parent, model_path.parent.parent):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            try:
                config = yaml.safe_load(candidate.read_text())
            except yaml.YAMLError as error:
                raise ValueError(f"run config {candidate} is not valid YAML: {error}") from error
            return config if isinstance(config, dict) else None
    return None


def _normalises_observations(normalize: Any) -> bool:
    """Whether a ``normalize`` hyperparameter (any accepted form) normalises observations."""
    kwargs = vec_normalize_kwargs({"normalize": normalize})
    return kwargs is not None and bool(kwargs.get("norm_obs", True))


def _checkpoint_stats_path(model_path: Path) -> Path | None:
    """``<prefix>_vecnormalize_<N>_steps.pkl`` beside checkpoint ``<prefix>_<N>_steps.zip``, if it exists."""
    match = _CHECKPOINT_NAME.match(model_path.name)
    if match:
        checkpoint = model_path.with_name(f"{match['prefix']}_vecnormalize_{match['steps']}_steps.pkl")
        if checkpoint.is_file():
            return checkpoint
    return None


def _vec_normalize_path(model_path: Path) -> Path | None:
    beside = model_path.with_name(VECNORMALIZE_FILE)
    return beside if beside.is_file() else _checkpoint_stats_path(model_path)


def _load_vec_normalize(stats_path: Path, env: gym.Env) -> VecNormalize:
    allow_pickle_load(stats_path, "VecNormalize statistics")
    try:
        with stats_path.open("rb") as handle:
            vec_normalize = pickle.load(handle)
    except Exception as error:  # unpickling raises many types for a damaged file
        raise ValueError(f"cannot read normalisation statistics {stats_path} (corrupt file?): {error}") from error
    if not isinstance(vec_normalize, VecNormalize):
        raise ValueError(f"{stats_path} holds a {type(vec_normalize).__name__}, not VecNormalize statistics")
    if vec_normalize.observation_space.shape != env.observation_space.shape:
        raise ValueError(
            f"normalisation statistics {stats_path} are for observations of shape {vec_normalize.observation_space.shape}, "
            f"the env's are {env.observation_space.shape}"
        )
    vec_normalize.training = False
    return vec_normalize


def _check_spaces(model_obs: gym.Space, env_obs: gym.Space, model_action: gym.Space, env_action: gym.Space, model_path: Path) -> None:
    if model_action.shape != env_action.shape:
        check_modalities(int(np.prod(model_action.shape or (0,))), int(np.prod(env_action.shape or (0,))), model_path)
    if model_obs.shape != env_obs.shape:
        raise ValueError(
            f"policy {model_path} expects observations of shape {model_obs.shape}, the env gives {env_obs.shape}: "
            "the observation layout or the number of modalities differs from training"
        )
