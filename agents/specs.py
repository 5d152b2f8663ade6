"""Agent specs: one short string names an agent, on the command line, in ``agents/suites.yml`` and in results.

Why strings: the spec a user typed is stored next to every result row, so each row says exactly
how to rebuild the agent that produced it. Accepted forms (``NAME=`` in front of any of them sets
the display name, e.g. ``ppo-long=ppo:runs/ppo_long``):

========================  ===============================================================  ==============
spec                      agent                                                            display name
========================  ===============================================================  ==============
``uniform``               every modality gets ``B`` samples per iteration                 ``uniform``
``random``                uniformly random actions, seeded per episode                     ``random``
``heuristic[:TAU]``       DUS-H with temperature ``TAU`` (default 0.1)                     the spec
``fixed:S1,S2,...``       constant shares of the budget, one per modality (normalised)     the spec
``best-constant[:ENV]``   the single constant allocation with the best mean test accuracy  the spec
                          on tuning seeds (:mod:`agents.constants`) of this env, or of the
                          task distribution of env id ``ENV`` (e.g. tuned on
                          ``MFeatMix-v0``, evaluated on ``MFeatMixHeldOut-v0``)
``ALGO:PATH``             a Stable-Baselines3 / sb3-contrib model, ``ALGO`` in             ``ALGO``
                          :data:`SB3_ALGOS` (``ppo``, ``a2c``, ``sac``, ...): a
                          ``train_agent.py`` run folder, an rl-baselines3-zoo run folder
                          (``logs/ppo/dus_env-Synthetic-v0_1``, :mod:`agents.zoo_run`) or a
                          model ``.zip`` in either; its normalisation statistics are found
``reinforce:PATH``        a DUS-R run or model (:class:`agents.reinforce.Reinforce`, an    ``reinforce``
                          SB3 algorithm: loaded like ``ALGO:PATH``)
``exported:PATH``         an exported policy artifact (what ``DUSSampler`` runs)           ``exported``
``pretrained``            the policy shipped with the package (:mod:`dus_env.policies`)    ``pretrained``
``bss[:ORDER]``           uniform quantities with BSS's row order, ``ORDER`` ``curriculum``  the spec
                          (default) or ``adaptive`` (:mod:`dus_env.methods.bss`)
``SPEC+bss[:ORDER]``      any spec above with BSS's row order (e.g. ``heuristic+bss``:       the spec
                          DUS-H's quantities, BSS's order)
========================  ===============================================================  ==============

A spec ending in ``+bss`` or ``+bss:ORDER`` always means the row order (a model ``PATH`` cannot
end that way). A BSS row order is a property of the env (the ``row_order`` learner option), so a spec with one
carries it as an env override (:attr:`AgentSpec.env_overrides`): ``evaluate.py`` runs that agent's
episodes in the env with the order, and every other agent in the env as given. ``DUS``, ``BSS``
and ``DUS+BSS`` are then three agents of one table: ``heuristic``, ``bss``, ``heuristic+bss``.

``PATH`` may contain ``{env}``, replaced by the env id without its namespace (``Synthetic-v0``), so
one spec names the model trained on each env: ``ppo:runs/ppo_{env}_0``.

Model-backed agents are imported lazily: parsing a spec, or building a rule-based agent, never
imports Stable-Baselines3 or the policy loaders.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import pickle
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from dus_env.config import EnvConfig
from dus_env.heuristic import DEFAULT_TEMPERATURE, check_temperature
from dus_env.validation import ConfigError

from .base import Agent
from .baselines import FixedAllocationAgent, RandomAgent, UniformAgent
from .errors import UsageError
from .heuristic import HeuristicAgent

#: The ``ALGO`` of ``ALGO:PATH``: lower-case class names of the Stable-Baselines3 and sb3-contrib
#: algorithms, plus the RL-Zoo names ``ppo_lstm`` and ``ppo_mask`` (the names
#: ``agents.sb3_agent.get_algorithm_class`` accepts; kept here so that parsing a spec does not import
#: Stable-Baselines3). Discrete-action ones (dqn, qrdqn, maskableppo) parse, but a model of theirs
#: cannot act on this env's ``Box`` actions and is refused when loaded.
SB3_ALGOS: tuple[str, ...] = (
    "a2c",
    "ars",
    "crossq",
    "ddpg",
    "dqn",
    "maskableppo",
    "ppo",
    "ppo_lstm",
    "ppo_mask",
    "qrdqn",
    "recurrentppo",
    "sac",
    "td3",
    "tqc",
    "trpo",
)
RULE_KINDS: tuple[str, ...] = ("uniform", "random", "heuristic", "fixed", "best-constant", "pretrained", "bss")
MODEL_KINDS: tuple[str, ...] = ("reinforce", "exported", *SB3_ALGOS)

#: One line per accepted form, for error messages and ``--help``.
SPEC_FORMS = (
    "uniform | random | heuristic | heuristic:TAU | fixed:S1,S2,... (one share per modality) | best-constant | "
    "best-constant:ENV | pretrained | bss | bss:adaptive | "
    f"ALGO:PATH (ALGO in {', '.join(SB3_ALGOS)}) | reinforce:PATH | exported:PATH; "
    "append +bss or +bss:adaptive for BSS's row order; prefix NAME= to set the display name; PATH may contain {env}"
)

ENV_PLACEHOLDER = "{env}"
_LABEL = re.compile(r"^([A-Za-z0-9_][\w.+-]*)=(.+)$")
_BSS_SUFFIX = re.compile(r"^(.+)\+bss(?::([^:+]*))?$", re.IGNORECASE)
#: ``bss:ORDER`` -> the ``row_order`` learner option.
BSS_ORDERS = {"curriculum": "bss_curriculum", "adaptive": "bss_adaptive"}
# What loading a user's model file can raise when the file is wrong (not a bug in our code): missing
# or unreadable file, wrong format, incompatible spaces or layout version, a truncated archive.
_LOAD_ERRORS = (ValueError, OSError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError)


@dataclass(frozen=True)
class AgentSpec:
    """A parsed spec.

    :param text: the spec without its ``NAME=`` prefix, e.g. ``fixed:0.3,0.7``; rebuilds the agent.
    :param kind: ``uniform``, ``random``, ``heuristic``, ``fixed``, ``reinforce``, ``exported`` or an
        entry of :data:`SB3_ALGOS`.
    :param label: display name used in tables, plots and result files.
    :param temperature: DUS-H temperature ``tau`` (``heuristic`` only), in cumulative-score units.
    :param shares: budget shares as given, one per modality (``fixed`` only; normalised by the agent).
    :param path: model path as given (model kinds only); may hold ``{env}``.
    :param tuned_on: env id whose task distribution ``best-constant`` is tuned on (``None``: the evaluated env).
    :param named: whether the label was given with ``NAME=`` (then it is never replaced).
    :param row_order: the BSS row order the agent's episodes run with (``bss`` and ``+bss`` specs), else ``None``.
    """

    text: str
    kind: str
    label: str
    temperature: float | None = None
    shares: tuple[float, ...] | None = None
    path: str | None = None
    tuned_on: str | None = None
    named: bool = False
    row_order: str | None = None

    @property
    def env_overrides(self) -> dict[str, str]:
        """What the agent's env must be made with (``gymnasium.make`` keyword arguments)."""
        return {"row_order": self.row_order} if self.row_order else {}


def parse_spec(text: str) -> AgentSpec:
    """Parse a spec string (syntax only: model paths and the share count are checked by :func:`make_agent`).

    :param text: e.g. ``heuristic:0.05``, ``fixed:0.3,0.7``, ``best=ppo:runs/ppo_Synthetic-v0_0``.
    :raises UsageError: the message names the spec and lists the accepted forms.
    """
    raw = text.strip()
    label = None
    match = _LABEL.match(raw)
    if match:
        label, raw = match.group(1), match.group(2).strip()
    suffix = _BSS_SUFFIX.match(raw)
    if suffix:
        try:
            base = parse_spec(suffix.group(1))
        except UsageError as exc:
            raise UsageError(f"agent spec {text!r}: {exc}") from None
        if base.row_order is not None:
            raise UsageError(f"agent spec {text!r}: give one BSS row order, not two")
        row_order = _parse_bss_order(text, suffix.group(2))
        canonical = base.text + _bss_suffix(row_order)
        return dataclasses.replace(base, text=canonical, label=label or canonical, named=label is not None, row_order=row_order)
    head, has_argument, argument = raw.partition(":")
    kind = head.strip().lower()
    argument = argument.strip()
    named = label is not None
    if kind in ("uniform", "random", "pretrained"):
        if has_argument:
            raise UsageError(f"agent spec {text!r}: {kind!r} takes no argument (write just {kind!r})")
        return AgentSpec(kind, kind, label or kind, named=named)
    if kind == "heuristic":
        temperature = _parse_temperature(text, argument) if has_argument else DEFAULT_TEMPERATURE
        canonical = f"heuristic:{argument}" if has_argument else "heuristic"
        return AgentSpec(canonical, kind, label or canonical, temperature=temperature, named=named)
    if kind == "fixed":
        shares = _parse_shares(text, argument)
        canonical = f"fixed:{argument}"
        return AgentSpec(canonical, kind, label or canonical, shares=shares, named=named)
    if kind == "bss":
        row_order = _parse_bss_order(text, argument if has_argument else None)
        canonical = _bss_suffix(row_order)[1:]
        return AgentSpec(canonical, "uniform", label or canonical, named=named, row_order=row_order)
    if kind == "best-constant":
        tuned_on = _parse_env_id(text, argument) if has_argument else None
        canonical = f"best-constant:{tuned_on}" if tuned_on else "best-constant"
        return AgentSpec(canonical, kind, label or canonical, tuned_on=tuned_on, named=named)
    if kind in MODEL_KINDS:
        if not argument:
            raise UsageError(f"agent spec {text!r}: {kind!r} needs a model path, e.g. {kind}:runs/{kind}_Synthetic-v0_0")
        return AgentSpec(f"{kind}:{argument}", kind, label or kind, path=argument, named=named)
    close = difflib.get_close_matches(kind, RULE_KINDS + MODEL_KINDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"unknown agent spec {text!r}{hint}: accepted forms are {SPEC_FORMS}")


def resolve_spec(spec: AgentSpec | str, env_id: str) -> AgentSpec:
    """``spec`` with ``{env}`` in its path replaced by ``env_id`` without namespace (``Synthetic-v0``)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.path is None or ENV_PLACEHOLDER not in spec.path:
        return spec
    path = spec.path.replace(ENV_PLACEHOLDER, env_id.split("/")[-1])
    return dataclasses.replace(spec, text=f"{spec.kind}:{path}{_bss_suffix(spec.row_order)}", path=path)


def absolute_spec(text: str, cwd: Path | None = None) -> str:
    """The spec text (no ``NAME=`` prefix) with its model path made absolute against ``cwd`` (default: this
    process's working folder); a spec without a path unchanged.

    Why: ``evaluate.py --backend ray`` builds agents in Ray workers, whose working folder is not the
    driver's (on a cluster, not even its machine): ``ppo:runs/ppo_Synthetic-v0_0`` must name the driver's
    folder there. Only the jobs sent to the workers change; labels and the specs in result files stay as given.
    """
    spec = parse_spec(text)
    if spec.path is None:
        return text
    path = Path(spec.path).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return f"{spec.kind}:{path}{_bss_suffix(spec.row_order)}"


def with_unique_labels(specs: Sequence[AgentSpec]) -> list[AgentSpec]:
    """The specs with distinct display names: default names that collide become the full spec text.

    Why: two models of the same algorithm (``ppo:runs/a``, ``ppo:runs/b``) would both be called
    ``ppo``; falling back to the spec keeps names short in the common case and unambiguous always.

    :raises UsageError: the same spec is given twice, or two explicit ``NAME=`` labels collide.
    """
    texts = [spec.text for spec in specs]
    for text in texts:
        if texts.count(text) > 1:
            raise UsageError(f"agent spec {text!r} is given twice: give each agent once")
    labels = [spec.label for spec in specs]
    result = [dataclasses.replace(spec, label=spec.text) if labels.count(spec.label) > 1 and not spec.named else spec for spec in specs]
    final = [spec.label for spec in result]
    for label in final:
        if final.count(label) > 1:
            raise UsageError(f"two agents are named {label!r}: give them different NAME= prefixes")
    return result


def make_agent(spec: AgentSpec | str, env: gym.Env, seed: int = 0) -> Agent:
    """Build the agent a spec names, for ``env`` (uses ``env.unwrapped.layout`` and ``.mapping``).

    :param spec: a spec string (see the module docstring) or a parsed :class:`AgentSpec`.
    :param env: a ``DUSEnv``, possibly wrapped; ``{env}`` in a model path is filled from ``env.spec.id``.
    :param seed: base seed of agents with their own randomness (``random``); each episode then
        draws from ``(seed, episode seed)``, so results do not depend on which process ran them.
    :returns: the agent, its ``name`` set to the spec's display name.
    :raises UsageError: bad spec, wrong share count, missing model file, or a model that does
        not fit the env; the message names the spec.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    base: Any = env.unwrapped  # a DUSEnv, checked by what it offers
    if not hasattr(base, "layout") or not hasattr(base, "mapping"):
        raise UsageError(f"agent spec {spec.text!r}: env {base!r} is not a DUSEnv (it has no layout/mapping)")
    if spec.row_order is not None and base.config.learner.row_order != spec.row_order:
        raise UsageError(
            f"agent spec {spec.text!r} runs with row_order={spec.row_order!r} but the env has "
            f"row_order={base.config.learner.row_order!r}: make the env with gymnasium.make(id, row_order={spec.row_order!r})"
        )
    if spec.path is not None and ENV_PLACEHOLDER in spec.path:
        if env.spec is None:
            raise UsageError(f"agent spec {spec.text!r} holds {ENV_PLACEHOLDER} but the env has no id to fill it with")
        spec = resolve_spec(spec, env.spec.id)
    agent = _build(spec, env, seed)
    agent.name = spec.label
    return agent


def _build(spec: AgentSpec, env: gym.Env, seed: int) -> Agent:
    base: Any = env.unwrapped  # checked by build_agent
    layout, mapping = base.layout, base.mapping
    if spec.kind == "uniform":
        return UniformAgent(layout, mapping)
    if spec.kind == "random":
        return RandomAgent(layout, mapping, seed=seed)
    if spec.kind == "heuristic":
        assert spec.temperature is not None
        return HeuristicAgent(layout, mapping, temperature=spec.temperature)
    if spec.kind == "fixed":
        assert spec.shares is not None
        if len(spec.shares) != mapping.n_modalities:
            raise UsageError(
                f"agent spec {spec.text!r} gives {len(spec.shares)} shares but the env has {mapping.n_modalities} "
                "modalities: give one share per modality"
            )
        return FixedAllocationAgent(layout, mapping, spec.shares)
    if spec.kind == "pretrained":
        from dus_env.policies import pretrained_path

        from .exported import ExportedPolicyAgent

        try:
            path = pretrained_path()
        except ValueError as exc:
            raise UsageError(f"agent spec {spec.text!r}: {exc}") from None
        try:
            return ExportedPolicyAgent.load(str(path), env)
        except _LOAD_ERRORS as exc:
            raise UsageError(f"agent spec {spec.text!r}: the shipped policy cannot act in this env: {exc}") from exc
    if spec.kind == "best-constant":
        from .constants import tune_best_constant

        tuned = tune_best_constant(_tuning_config(base.config, spec.tuned_on))
        return FixedAllocationAgent.from_quantities(layout, mapping, tuned.quantities)
    assert spec.path is not None
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise UsageError(f"agent spec {spec.text!r}: model path {spec.path!r} does not exist")
    try:
        if spec.kind == "exported":
            from agents.exported import ExportedPolicyAgent

            return ExportedPolicyAgent.load(str(path), env)
        from agents.sb3_agent import SB3Agent

        return SB3Agent.load(str(path), env, algo=spec.kind)
    except ModuleNotFoundError as exc:
        raise UsageError(f"agent spec {spec.text!r} needs a module that is not available: {exc}") from exc
    except _LOAD_ERRORS as exc:
        raise UsageError(f"agent spec {spec.text!r}: cannot load {spec.path!r} for this env: {exc}") from exc


def _parse_bss_order(text: str, argument: str | None) -> str:
    """The ``row_order`` of ``bss[:ORDER]``; no argument is the curriculum."""
    name = "curriculum" if argument is None else argument.strip().lower()
    if name not in BSS_ORDERS:
        raise UsageError(f"agent spec {text!r}: BSS order {name!r} is unknown: choose {' or '.join(BSS_ORDERS)}")
    return BSS_ORDERS[name]


def _bss_suffix(row_order: str | None) -> str:
    """``+bss`` / ``+bss:adaptive`` for a row order (the curriculum is the default), ``""`` for none."""
    if row_order is None:
        return ""
    name = next(name for name, order in BSS_ORDERS.items() if order == row_order)
    return "+bss" if name == "curriculum" else f"+bss:{name}"


def _parse_env_id(text: str, argument: str) -> str:
    """A registered env id, with or without the ``dus_env/`` namespace (:func:`dus_env.registration.resolve_env_id`)."""
    from dus_env.registration import resolve_env_id

    try:
        return resolve_env_id(argument)
    except ConfigError as exc:
        raise UsageError(f"agent spec {text!r}: {exc}") from None


def _tuning_config(config: EnvConfig, tuned_on: str | None) -> EnvConfig:
    """The config ``best-constant`` is tuned with: the evaluated env's, with ``tuned_on``'s task distribution.

    Training settings (episode length, batch sizes, learner) stay the evaluated env's; torch's
    thread setting is left alone.
    """
    from dus_env.presets import preset_for_id

    if tuned_on is not None:
        source = preset_for_id(tuned_on)
        if source.task.kind == "features":
            raise UsageError(
                f"agent spec 'best-constant:{tuned_on}': that env needs a features file, which a spec cannot name; "
                "evaluate best-constant on the Features-v0 env itself (it is then tuned on that env's file)"
            )
        if source.task.n_modalities != config.task.n_modalities:
            raise UsageError(
                f"agent spec 'best-constant:{tuned_on}': that env has {source.task.n_modalities} modalities, "
                f"the evaluated env {config.task.n_modalities}"
            )
        try:
            config = dataclasses.replace(config, task=source.task, shuffle_modalities=source.shuffle_modalities)
        except ConfigError as exc:
            raise UsageError(f"agent spec 'best-constant:{tuned_on}': this env's settings do not fit that task: {exc}") from None
    return dataclasses.replace(config, torch_threads=None)


def _parse_temperature(text: str, argument: str) -> float:
    """The number after ``heuristic:``, checked by the rule's own :func:`~dus_env.heuristic.check_temperature`."""
    try:
        temperature = float(argument)
    except ValueError:
        raise UsageError(f"agent spec {text!r}: temperature {argument!r} is not a number (e.g. heuristic:0.05)") from None
    try:
        return check_temperature(temperature)
    except ValueError as error:
        raise UsageError(f"agent spec {text!r}: temperature must be a positive number, got {argument!r}") from error


def _parse_shares(text: str, argument: str) -> tuple[float, ...]:
    parts = [part.strip() for part in argument.split(",")]
    try:
        shares = tuple(float(part) for part in parts)
    except ValueError:
        raise UsageError(f"agent spec {text!r}: shares must be comma-separated numbers, one per modality (e.g. fixed:0.3,0.7)") from None
    if not argument or any(not math.isfinite(s) or s <= 0 for s in shares):
        raise UsageError(f"agent spec {text!r}: shares must be positive numbers, one per modality (e.g. fixed:0.3,0.7)")
    return shares
