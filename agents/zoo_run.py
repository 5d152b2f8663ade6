"""Runs written by rl-baselines3-zoo (``python -m rl_zoo3.train``), read so that ``evaluate.py`` scores them right.

The zoo writes a run to ``<log>/<algo>/<env>_<N>/`` where ``<env>`` is the env id with ``/``
replaced by ``-`` (``logs/ppo/dus_env-Synthetic-v0_1``) and ``N`` counts the runs of that algo and env:

================================  ===============================================================
file                              content
================================  ===============================================================
``<env>.zip``                     the final model
``best_model.zip``                the best model of the in-training evaluation (``--eval-freq``)
``rl_model_<N>_steps.zip``        checkpoints (``--save-freq``), each with
                                  ``rl_model_vecnormalize_<N>_steps.pkl``
``<env>/vecnormalize.pkl``        ``VecNormalize`` statistics (runs with ``normalize``)
``<env>/config.yml``              the hyperparameters the run used (the ``-conf`` entry + ``-params``)
``<env>/args.yml``                the command line, ``algo`` and ``env_kwargs`` among it
================================  ===============================================================

Why this module: a policy trained on normalised observations and scored on raw ones plays badly
and says nothing; the zoo keeps the statistics one folder down, where a loader that looks beside
the model never finds them. Both YAML files are ``yaml.dump`` of ``OrderedDict``; they are read
with a safe loader that rebuilds those dicts and runs no code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .results import lists_for_tuples

#: Files of the zoo's parameter folder ``<run>/<env>/``.
ZOO_ARGS_FILE = "args.yml"
ZOO_CONFIG_FILE = "config.yml"
ZOO_STATS_FILE = "vecnormalize.pkl"

#: Env kwargs that are not part of the env's settings: a process-wide torch setting, rendering.
_NOT_SETTINGS = frozenset({"torch_threads", "render_mode"})


class _ZooYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads the zoo's ``!!python/object/apply:collections.OrderedDict`` (as a
    dict) and ``!!python/tuple`` (as a list: env kwargs given as Python tuples on the zoo's command line).

    Any other Python tag (a class given with ``-params``, say) becomes the text ``<python/...>``
    instead of being imported: only ``algo``, ``env``, ``env_kwargs`` and ``normalize`` are used.
    """


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    arguments = loader.construct_sequence(node, deep=True)  # type: ignore[arg-type]
    return {key: value for key, value in (arguments[0] if arguments else [])}


def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    return loader.construct_sequence(node, deep=True)  # type: ignore[arg-type]


def _other_python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    return f"<python/{suffix}>"


_ZooYamlLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
_ZooYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
_ZooYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/", _other_python_tag)


def read_zoo_yaml(path: Path) -> dict[str, Any]:
    """A zoo ``config.yml`` / ``args.yml`` as a plain dict, without running code.

    :raises ValueError: the file is not valid YAML or does not hold a mapping.
    """
    try:
        data = yaml.load(path.read_text(), Loader=_ZooYamlLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"rl-baselines3-zoo file {path} is not valid YAML: {error}") from error
    # A bad file, not a bad argument: ValueError, as for invalid YAML.
    if not isinstance(data, dict):
        raise ValueError(f"rl-baselines3-zoo file {path} should hold a mapping, not {type(data).__name__}")
    return data


@dataclass(frozen=True)
class ZooRun:
    """One rl-baselines3-zoo run folder.

    :param folder: the run folder ``<log>/<algo>/<env>_<N>``.
    :param params: its parameter folder ``<folder>/<env>`` (``config.yml``, ``args.yml``, statistics).
    :param hyperparams: ``config.yml``: the hyperparameters of the run.
    :param args: ``args.yml``: the zoo's command line.
    """

    folder: Path
    params: Path
    hyperparams: dict[str, Any]
    args: dict[str, Any]

    @property
    def model(self) -> Path:
        """The final model, ``<folder>/<env>.zip``."""
        return self.folder / f"{self.params.name}.zip"

    @property
    def stats(self) -> Path:
        """Where the zoo saves the ``VecNormalize`` statistics of the final (and best) model."""
        return self.params / ZOO_STATS_FILE

    @property
    def algo(self) -> str | None:
        """The zoo's algorithm name (``ppo``, ``sac``, ``ppo_lstm``, ...)."""
        algo = self.args.get("algo")
        return str(algo) if algo else None

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The env kwargs the run trained with: ``env_kwargs`` of the hyperparameters, replaced by ``--env-kwargs``.

        The same precedence as the zoo's own ``enjoy``.
        """
        given = self.args.get("env_kwargs")
        kwargs = given if given is not None else self.hyperparams.get("env_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else {}


def find_zoo_run(folder: Path) -> ZooRun | None:
    """The zoo run whose folder is ``folder``, or ``None`` when ``folder`` is not one.

    A zoo run folder holds one parameter folder with an ``args.yml``; its name is the env name.

    :raises ValueError: a parameter file cannot be read, or there are several parameter folders.
    """
    if not folder.is_dir():
        return None
    params = sorted(child for child in folder.iterdir() if (child / ZOO_ARGS_FILE).is_file())
    if not params:
        return None
    if len(params) > 1:
        raise ValueError(f"{folder} holds several rl-baselines3-zoo parameter folders ({', '.join(p.name for p in params)}): keep one")
    config_path = params[0] / ZOO_CONFIG_FILE
    hyperparams = read_zoo_yaml(config_path) if config_path.is_file() else {}
    return ZooRun(folder, params[0], hyperparams, read_zoo_yaml(params[0] / ZOO_ARGS_FILE))


def zoo_runs_below(folder: Path) -> list[Path]:
    """Zoo run folders directly inside ``folder`` (when it is a ``<log>/<algo>`` folder), sorted."""
    if not folder.is_dir():
        return []
    return sorted(run.parent for run in folder.glob(f"*/*/{ZOO_ARGS_FILE}"))


def check_env_kwargs(run: ZooRun, env_config: Any, model_path: Path) -> None:
    """Refuse to evaluate ``run`` in an env that lacks a setting the run trained with.

    The run's ``env_kwargs`` are applied to the evaluated env's config: if that changes anything,
    the evaluated env is not the one the policy learned in (another episode length, another
    learner, ...). Settings the run did not set are free, so a policy trained on one task
    distribution may be scored on another one.

    :param env_config: the evaluated env's :class:`dus_env.config.EnvConfig`.
    :raises ValueError: the settings differ (the message lists them and gives the ``--env-kwargs``
        that make ``evaluate.py`` use the run's), or the run's kwargs are not valid for this env.
    """
    from dus_env.config import resolve_config

    kwargs = {key: value for key, value in run.env_kwargs.items() if key not in _NOT_SETTINGS}
    if not kwargs:
        return
    fix = f"evaluate with --env-kwargs '{json.dumps(kwargs, default=list)}' (the run's), or pass the settings the run trained with"
    try:
        applied = resolve_config(env_config, kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"the zoo run of {model_path} trained with env kwargs {kwargs} that do not apply to the evaluated env: {error}"
        ) from error
    differences = _differences(lists_for_tuples(dataclasses.asdict(env_config)), lists_for_tuples(dataclasses.asdict(applied)))
    if differences:
        listed = "; ".join(f"{name}: {trained!r} in training, {evaluated!r} here" for name, evaluated, trained in differences)
        raise ValueError(f"the zoo run of {model_path} trained in another env ({listed}): {fix}")


def _differences(evaluated: dict[str, Any], trained: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted name, evaluated value, trained value)`` for every field that differs."""
    found = []
    for key in sorted(set(evaluated) | set(trained)):
        left, right = evaluated.get(key), trained.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            found.append((f"{prefix}{key}", left, right))
    return found
