"""Does a policy read the state, or has it learned "favour index 1"? The mirrored-observation probe.

A policy plays held-out episodes of an env; at every decision it is also shown the *mirrored*
observation (the same state with the modalities' positions reversed, see
:meth:`dus_env.observation.ObservationLayout.permute_modalities`). A policy that reads the scores
gives the mirrored modalities the shares it gave the originals: its share for position 0 on the
mirrored observation equals its share for the last position on the original. A policy that learned
a fixed preference for an index keeps its shares where they were.

Printed per agent: the mean share of position 0 on the original and on the mirrored observations,
the share the mirror would give if the policy followed the modalities, and the *follow ratio*: the
least-squares slope of (mirrored - original) on (followed - original) of the position-0 share over
all decisions (1 = the shares move fully with the modalities, 0 = they do not move).

Usage::

    python bench/mirror_probe.py --env SyntheticMix-v0 --agents heuristic ppo:runs/ppo_0/best_model/best_model.zip
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.constants import shares_of
from agents.seed_ranges import HELD_OUT_SEEDS
from agents.specs import make_agent
from dus_env.env import DUSEnv
from dus_env.registration import resolve_env_id
from dus_env.vector_env import DUSVectorEnv


@dataclass(frozen=True)
class MirrorResult:
    """Position-0 shares over every decision: on the original, on the mirrored, and if the policy followed."""

    original: np.ndarray
    mirrored: np.ndarray
    followed: np.ndarray

    @property
    def follow_ratio(self) -> float:
        """Least-squares slope of how far the share moved on how far following would move it.

        A slope, not a ratio of means: with shuffled modalities the weak one sits at either
        position, so the signed moves of different decisions would cancel in a mean.
        """
        moved, wanted = self.mirrored - self.original, self.followed - self.original
        scale = float(np.sum(wanted * wanted))
        return float(np.sum(moved * wanted)) / scale if scale > 1e-12 else float("nan")


def mirror_probe(spec: str, env_id: str, seeds: list[int], env_kwargs: dict | None = None) -> MirrorResult:
    """Run ``spec``'s episodes on ``seeds`` (one vector env) and probe every decision with its mirror."""
    env_kwargs = env_kwargs or {}
    single = gym.make(env_id, **env_kwargs)
    agent = make_agent(spec, single)
    dus = cast(DUSEnv, single.unwrapped)
    layout, mapping = dus.layout, dus.mapping
    order = np.arange(mapping.n_modalities)[::-1]
    venv = gym.make_vec(env_id, num_envs=len(seeds), vectorization_mode="vector_entry_point", **env_kwargs)
    players, probes = [agent.episode_copy() for _ in seeds], [agent.episode_copy() for _ in seeds]
    for player, probe, seed in zip(players, probes, seeds):
        player.reset(seed)
        probe.reset(seed)
    # VectorEnv.reset's stub says int | None; vector envs (this one too) take one seed per env.
    observations, _ = venv.reset(seed=seeds)  # type: ignore[arg-type]
    original, mirrored, followed = [], [], []

    def share(action: np.ndarray) -> np.ndarray:
        return shares_of(mapping.quantities(action))

    for _ in range(cast(DUSVectorEnv, venv.unwrapped).core.config.decision_steps):
        actions = np.stack([player.act(obs) for player, obs in zip(players, observations)])
        for probe, obs, action in zip(probes, observations, actions):
            shares = share(action)
            original.append(shares[0])
            followed.append(shares[order[0]])
            mirrored.append(share(probe.act(layout.permute_modalities(obs, order)))[0])
        observations, _, _, _, _ = venv.step(actions)
    return MirrorResult(np.array(original), np.array(mirrored), np.array(followed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="SyntheticMix-v0")
    parser.add_argument("--agents", nargs="+", default=["heuristic"], help="agent specs (evaluate.py syntax)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed-offset", type=int, default=HELD_OUT_SEEDS.start)
    args = parser.parse_args(argv)
    env_id = resolve_env_id(args.env)
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    print(f"{env_id}, {len(seeds)} episodes from seed {seeds[0]}: share of position 0")
    print(f"  {'agent':40s} {'original':>9s} {'mirrored':>9s} {'if followed':>12s} {'follow ratio':>13s}")
    for spec in args.agents:
        result = mirror_probe(spec, env_id, seeds)
        print(
            f"  {spec[:40]:40s} {result.original.mean():9.3f} {result.mirrored.mean():9.3f} "
            f"{result.followed.mean():12.3f} {result.follow_ratio:13.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
