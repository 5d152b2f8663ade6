"""Agent specs: every accepted form, every error, and the lazy loading of model-backed agents."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import dus_env.heuristic
from agents.baselines import FixedAllocationAgent, RandomAgent, UniformAgent
from agents.errors import UsageError
from agents.heuristic import HeuristicAgent
from agents.rollout import run_episode
from agents.specs import (
    DEFAULT_TEMPERATURE,
    AgentSpec,
    make_agent,
    parse_spec,
    resolve_spec,
    with_unique_labels,
)

REPO = Path(__file__).resolve().parents[1]


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uniform", AgentSpec("uniform", "uniform", "uniform")),
        ("  random ", AgentSpec("random", "random", "random")),
        ("heuristic", AgentSpec("heuristic", "heuristic", "heuristic", temperature=DEFAULT_TEMPERATURE)),
        ("heuristic:0.05", AgentSpec("heuristic:0.05", "heuristic", "heuristic:0.05", temperature=0.05)),
        ("fixed:0.3,0.7", AgentSpec("fixed:0.3,0.7", "fixed", "fixed:0.3,0.7", shares=(0.3, 0.7))),
        ("fixed: 1, 3", AgentSpec("fixed:1, 3", "fixed", "fixed:1, 3", shares=(1.0, 3.0))),
        ("ppo:runs/ppo_Synthetic-v0_0", AgentSpec("ppo:runs/ppo_Synthetic-v0_0", "ppo", "ppo", path="runs/ppo_Synthetic-v0_0")),
        ("A2C:runs/a2c", AgentSpec("a2c:runs/a2c", "a2c", "a2c", path="runs/a2c")),
        ("tqc:m.zip", AgentSpec("tqc:m.zip", "tqc", "tqc", path="m.zip")),
        ("ppo_lstm:runs/r", AgentSpec("ppo_lstm:runs/r", "ppo_lstm", "ppo_lstm", path="runs/r")),
        ("reinforce:runs/r", AgentSpec("reinforce:runs/r", "reinforce", "reinforce", path="runs/r")),
        ("exported:policy.onnx", AgentSpec("exported:policy.onnx", "exported", "exported", path="policy.onnx")),
        ("best=ppo:runs/p", AgentSpec("ppo:runs/p", "ppo", "best", path="runs/p", named=True)),
        ("cold=heuristic:1", AgentSpec("heuristic:1", "heuristic", "cold", temperature=1.0, named=True)),
        ("ppo:runs/lr=3e-4", AgentSpec("ppo:runs/lr=3e-4", "ppo", "ppo", path="runs/lr=3e-4")),
        ("ppo:runs/ppo_{env}_0", AgentSpec("ppo:runs/ppo_{env}_0", "ppo", "ppo", path="runs/ppo_{env}_0")),
        ("bss", AgentSpec("bss", "uniform", "bss", row_order="bss_curriculum")),
        ("bss:curriculum", AgentSpec("bss", "uniform", "bss", row_order="bss_curriculum")),
        ("BSS:Adaptive", AgentSpec("bss:adaptive", "uniform", "bss:adaptive", row_order="bss_adaptive")),
        (
            "heuristic+bss",
            AgentSpec("heuristic+bss", "heuristic", "heuristic+bss", temperature=DEFAULT_TEMPERATURE, row_order="bss_curriculum"),
        ),
        (
            "d=heuristic:0.05+bss:adaptive",
            AgentSpec("heuristic:0.05+bss:adaptive", "heuristic", "d", temperature=0.05, named=True, row_order="bss_adaptive"),
        ),
        ("ppo:runs/p+bss", AgentSpec("ppo:runs/p+bss", "ppo", "ppo:runs/p+bss", path="runs/p", row_order="bss_curriculum")),
        (
            "heuristic+BSS:Adaptive",
            AgentSpec(
                "heuristic+bss:adaptive", "heuristic", "heuristic+bss:adaptive", temperature=DEFAULT_TEMPERATURE, row_order="bss_adaptive"
            ),
        ),
    ],
)
def test_parse_every_form(text: str, expected: AgentSpec) -> None:
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bogus", "accepted forms are"),
        ("ppi:runs/x", "did you mean 'ppo'"),
        ("uniform:3", "takes no argument"),
        ("random:1", "takes no argument"),
        ("heuristic:abc", "is not a number"),
        ("heuristic:0", "positive number"),
        ("heuristic:-1", "positive number"),
        ("heuristic:nan", "positive number"),
        ("fixed", "shares must be"),
        ("fixed:", "shares must be"),
        ("fixed:0.3,x", "comma-separated numbers"),
        ("fixed:0.3,-0.7", "positive numbers"),
        ("fixed:0,1", "positive numbers"),
        ("ppo:", "needs a model path"),
        ("ppo", "needs a model path"),
        ("", "accepted forms are"),
        ("bss:fast", "BSS order 'fast' is unknown: choose curriculum or adaptive"),
        ("bss:", "BSS order '' is unknown"),
        ("heuristic+bss:", "BSS order '' is unknown"),
        ("bss+bss", "give one BSS row order, not two"),
        ("heuristic+bss:x", "BSS order 'x' is unknown"),
        ("bogus+bss", "accepted forms are"),
    ],
)
def test_parse_errors_name_the_spec(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_spec(text)
    assert fragment in str(error.value)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("temperature", ["0", "-1", "nan", "inf", "-0.0"])
def test_temperature_is_checked_by_the_heuristic_rule_itself(temperature: str) -> None:
    # DUSSampler.heuristic and the spec refuse the same temperatures, for the reason the rule gives.
    with pytest.raises(UsageError, match=f"temperature must be a positive number, got '{temperature}'") as error:
        parse_spec(f"heuristic:{temperature}")
    assert isinstance(error.value.__cause__, ValueError) and "heuristic temperature=" in str(error.value.__cause__)
    assert DEFAULT_TEMPERATURE is dus_env.heuristic.DEFAULT_TEMPERATURE


def test_spec_fields_are_data_only() -> None:
    assert not hasattr(AgentSpec, "is_model")  # whether a spec needs a file is its kind: kind in MODEL_KINDS
    assert not hasattr(HeuristicAgent, "shares")  # the shares are dus_env.heuristic.heuristic_shares


def test_unknown_spec_is_a_value_error_listing_the_forms() -> None:
    with pytest.raises(ValueError, match=r"uniform \| random \| heuristic .*fixed:S1,S2.*reinforce:PATH \| exported:PATH"):
        parse_spec("greedy")


def test_bss_specs_carry_their_row_order_as_an_env_override() -> None:
    assert parse_spec("heuristic+bss:adaptive").env_overrides == {"row_order": "bss_adaptive"}
    assert parse_spec("heuristic").env_overrides == {}
    # The placeholder is filled and the order kept: the resolved text rebuilds the same agent.
    resolved = resolve_spec("ppo:runs/{env}+bss", "dus_env/Synthetic-v0")
    assert resolved.text == "ppo:runs/Synthetic-v0+bss" and parse_spec(resolved.text).row_order == "bss_curriculum"


def test_bss_agent_needs_an_env_with_its_row_order() -> None:
    with pytest.raises(UsageError, match=r"row_order='bss_curriculum' but the env has row_order='epoch'"):
        make_agent("bss", gym.make("dus_env/Synthetic-v0"))
    agent = make_agent("heuristic+bss", gym.make("dus_env/Synthetic-BSS-v0"))
    assert isinstance(agent, HeuristicAgent) and agent.name == "heuristic+bss"
    assert isinstance(make_agent("bss", gym.make("dus_env/Synthetic-v0", row_order="bss_curriculum")), UniformAgent)


def test_resolve_spec_fills_the_env_placeholder() -> None:
    spec = resolve_spec("ppo:runs/ppo_{env}_0", "dus_env/SyntheticHard-v0")
    assert spec.path == "runs/ppo_SyntheticHard-v0_0"
    assert spec.text == "ppo:runs/ppo_SyntheticHard-v0_0"
    assert spec.label == "ppo"
    assert resolve_spec("uniform", "dus_env/Synthetic-v0") == parse_spec("uniform")


def test_unique_labels_fall_back_to_the_spec_text() -> None:
    specs = with_unique_labels([parse_spec(t) for t in ("uniform", "ppo:runs/a", "ppo:runs/b", "sac:runs/c", "ppo=td3:runs/d")])
    assert [s.label for s in specs] == ["uniform", "ppo:runs/a", "ppo:runs/b", "sac", "ppo"]


def test_unique_labels_refuse_duplicates() -> None:
    with pytest.raises(UsageError, match="given twice"):
        with_unique_labels([parse_spec("uniform"), parse_spec(" uniform")])
    with pytest.raises(UsageError, match="two agents are named 'x'"):
        with_unique_labels([parse_spec("x=uniform"), parse_spec("x=heuristic")])
    with pytest.raises(UsageError, match="two agents are named 'uniform'"):
        with_unique_labels([parse_spec("uniform"), parse_spec("uniform=heuristic")])


def test_parsing_does_not_import_stable_baselines3() -> None:
    code = (
        "import sys; from agents.specs import parse_spec; parse_spec('ppo:runs/x'); parse_spec('sac:runs/y'); "
        "assert 'stable_baselines3' not in sys.modules, 'parse_spec imported stable_baselines3'"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


# -- building agents -----------------------------------------------------------------------------


@pytest.fixture
def env(make_tiny_env: Callable[..., gym.Env]) -> gym.Env:
    return make_tiny_env("dus_env/Synthetic-v0")


def test_rule_based_agents(env: gym.Env) -> None:
    observation, _ = env.reset(seed=0)
    uniform = make_agent("uniform", env)
    assert isinstance(uniform, UniformAgent) and uniform.name == "uniform"
    assert np.array_equal(uniform.act(observation), np.zeros(2, dtype=np.float32))

    heuristic = make_agent("heuristic:0.05", env)
    assert isinstance(heuristic, HeuristicAgent)
    assert heuristic.temperature == 0.05 and heuristic.name == "heuristic:0.05"

    fixed = make_agent("fixed:1,3", env)
    assert isinstance(fixed, FixedAllocationAgent) and fixed.name == "fixed:1,3"
    quantities = env.unwrapped.mapping.quantities(fixed.act(observation))
    assert quantities.tolist() == [4, 12]  # shares 1/4, 3/4 of M * B = 16 samples


def test_random_agent_is_seeded_per_episode_and_by_base_seed(env: gym.Env) -> None:
    observation, _ = env.reset(seed=0)

    def first_action(base_seed: int, episode_seed: int) -> np.ndarray:
        agent = make_agent("random", env, seed=base_seed)
        assert isinstance(agent, RandomAgent) and agent.name == "random"
        agent.reset(episode_seed)
        return agent.act(observation)

    assert np.array_equal(first_action(0, 5), first_action(0, 5))
    assert not np.array_equal(first_action(0, 5), first_action(0, 6))
    assert not np.array_equal(first_action(0, 5), first_action(1, 5))


def test_label_becomes_the_agent_name(env: gym.Env) -> None:
    agent = make_agent("hot=heuristic:1.0", env)
    assert agent.name == "hot"
    assert run_episode(env, agent, seed=3).agent == "hot"


def test_fixed_share_count_must_match_the_env(env: gym.Env) -> None:
    with pytest.raises(UsageError, match=r"'fixed:0.2,0.3,0.5' gives 3 shares but the env has 2 modalities"):
        make_agent("fixed:0.2,0.3,0.5", env)


def test_missing_model_path_names_the_path(env: gym.Env, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_run"
    for kind in ("ppo", "reinforce", "exported"):
        with pytest.raises(UsageError, match=f"model path '{missing}' does not exist"):
            make_agent(f"{kind}:{missing}", env)


def test_not_a_dus_env() -> None:
    with pytest.raises(UsageError, match="is not a DUSEnv"):
        make_agent("uniform", gym.make("CartPole-v1"))


class _FakeLoaded(UniformAgent):
    calls: list[tuple[Any, ...]] = []

    @classmethod
    def load(cls, path: str, env: gym.Env, **kwargs: Any) -> _FakeLoaded:
        cls.calls.append((path, env, kwargs))
        return cls(env.unwrapped.layout, env.unwrapped.mapping)


@pytest.mark.parametrize(
    ("kind", "module", "attribute", "kwargs"),
    [
        ("ppo", "agents.sb3_agent", "SB3Agent", {"algo": "ppo"}),
        ("a2c", "agents.sb3_agent", "SB3Agent", {"algo": "a2c"}),
        ("recurrentppo", "agents.sb3_agent", "SB3Agent", {"algo": "recurrentppo"}),
        ("reinforce", "agents.sb3_agent", "SB3Agent", {"algo": "reinforce"}),
        ("exported", "agents.exported", "ExportedPolicyAgent", {}),
    ],
)
def test_model_specs_dispatch_to_their_loader(
    env: gym.Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, module: str, attribute: str, kwargs: dict
) -> None:
    fake = types.ModuleType(module)
    setattr(fake, attribute, _FakeLoaded)
    monkeypatch.setitem(sys.modules, module, fake)
    _FakeLoaded.calls = []
    model = tmp_path / "model.zip"
    model.write_bytes(b"")
    agent = make_agent(f"{kind}:{model}", env)
    assert isinstance(agent, _FakeLoaded)
    assert agent.name == kind
    assert _FakeLoaded.calls == [(str(model), env, kwargs)]


def test_env_placeholder_is_filled_from_the_env_id(env: gym.Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("agents.sb3_agent")
    fake.SB3Agent = _FakeLoaded
    monkeypatch.setitem(sys.modules, "agents.sb3_agent", fake)
    _FakeLoaded.calls = []
    (tmp_path / "ppo_Synthetic-v0_0").mkdir()
    make_agent(f"ppo:{tmp_path}/ppo_{{env}}_0", env)
    assert _FakeLoaded.calls[0][0] == str(tmp_path / "ppo_Synthetic-v0_0")


def test_missing_loader_module_and_load_failures_are_spec_errors(env: gym.Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "policy.pt"
    model.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "agents.sb3_agent", None)  # makes the import fail
    with pytest.raises(UsageError, match=r"'reinforce:.*policy.pt' needs a module that is not available"):
        make_agent(f"reinforce:{model}", env)

    class Broken:
        @classmethod
        def load(cls, path: str, env: gym.Env) -> None:
            raise ValueError("observation layout version 7 is not supported")

    fake = types.ModuleType("agents.exported")
    fake.ExportedPolicyAgent = Broken
    monkeypatch.setitem(sys.modules, "agents.exported", fake)
    with pytest.raises(UsageError, match=r"'exported:.*policy.pt': cannot load .* layout version 7"):
        make_agent(f"exported:{model}", env)


@pytest.mark.slow
def test_real_ppo_model_loads_and_acts(env: gym.Env, tmp_path: Path) -> None:
    """End to end with Stable-Baselines3: a PPO model saved to a .zip is rebuilt from its spec."""
    pytest.importorskip("agents.sb3_agent")
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=8)
    model.save(tmp_path / "model.zip")
    agent = make_agent(f"ppo:{tmp_path / 'model.zip'}", env)
    assert agent.name == "ppo"
    result = run_episode(env, agent, seed=10_000)
    assert len(result.final["quantity_history"]) == env.unwrapped.config.decision_steps
