"""Every range of episode seeds the project uses, in one place, and why they never meet.

A seed fixes an episode's task instance, data order and model initialisation (``env.reset(seed=s)``).
A policy scored on an episode it was trained on, tuned on or chosen with would look better than it
is, so each use below has its own range, disjoint from all the others (``tests/test_seed_ranges.py``
checks it). Ranges whose use has no fixed size ("10,000 up") end where the next one starts.

==========================  =======================  ===============================================
constant                    seeds                    used by
==========================  =======================  ===============================================
``TRAINING_SEEDS``          0 - 9,999                ``train_agent.py --seed`` (envs ``seed + i``)
``EVALUATION_SEEDS``        10,000 - 19,999          ``evaluate.py`` by default (``--seed-offset``)
``MAIN_TABLE_SEEDS``        20,000 - 20,009          the main table (``agents/suites.yml`` suite ``main``)
``GENERALISATION_SEEDS``    40,000 - 40,019          the generalisation table of ``docs/results.md``
``DESIGN_PROBE_SEEDS``      50,000 - 50,039          first probes of the mix benchmarks' design
``HELD_OUT_SEEDS``          50,100 - 50,139          ``bench/headroom.py``, ``bench/mirror_probe.py``
``TUNING_SEEDS``            60,000 - 60,019          the best single constant (``best-constant``)
``SELECTION_SEEDS``         65,000 - 65,039          choosing the shipped policy among runs
``MIX_DESIGN_SEEDS``        70,000 - 79,999          the mix benchmarks' design (70,000 up)
``PLUGIN_TABLE_SEEDS``      80,000 - 89,999          ``bench/plugin_table.py`` (80,000 up)
``TRAIN_EVAL_SEEDS``        1,000,000 - 1,099,999    ``train_agent.py --eval-seed`` (in-training eval)
``SWEEP_EVAL_SEEDS``        1,100,000 - 1,199,999    ``tune_agent.py --eval-seed`` (choosing hyperparameters)
``RESUME_SEEDS``            2**31 - 2**31 + 2**30    training envs of a resumed SB3 run
``DUS_R_GROUP_SEEDS``       2**31 + 2**30 - 2**32    DUS-R's episode groups (drawn at random)
==========================  =======================  ===============================================
"""

from __future__ import annotations

import itertools

#: ``train_agent.py --seed``: small integers; a run's ``n_envs`` training envs start at ``seed, seed + 1, ...``
#: and continue with their own random streams, so training stays far below every evaluation range.
TRAINING_SEEDS = range(10_000)

#: ``evaluate.py``'s default episodes (``--seed-offset``, ``--seeds N`` takes the first N): above every
#: training seed, so a trained policy is never scored on an episode it was trained on.
EVALUATION_SEEDS = range(10_000, 20_000)

#: The main table of the README and ``docs/results.md`` (suite ``main``): never looked at while
#: choosing the env defaults (``EVALUATION_SEEDS`` were).
MAIN_TABLE_SEEDS = range(20_000, 20_010)

#: The generalisation table of ``docs/results.md``: never used in training, tuning or selection.
GENERALISATION_SEEDS = range(40_000, 40_020)

#: Where the first candidates of the mix benchmarks were probed (``docs/results.md``, design table).
DESIGN_PROBE_SEEDS = range(50_000, 50_040)

#: Held-out instances of the headroom and mirror benches (``bench/headroom.py``, ``bench/mirror_probe.py``).
HELD_OUT_SEEDS = range(50_100, 50_140)

#: The best single constant is tuned on these (``best-constant`` agents, ``bench/headroom.py``).
TUNING_SEEDS = range(60_000, 60_020)

#: The shipped policy was chosen among training runs on these (``docs/results.md``).
SELECTION_SEEDS = range(65_000, 65_040)

#: The mix benchmarks were designed on these once the design probes were noticed to overlap nothing
#: else (``docs/results.md``: 70,000-70,039 and up).
MIX_DESIGN_SEEDS = range(70_000, 80_000)

#: ``bench/plugin_table.py``'s default episodes (``--seed-offset``).
PLUGIN_TABLE_SEEDS = range(80_000, 90_000)

#: ``train_agent.py``'s evaluation during training (``--eval-seed``): the same instances in every
#: evaluation and every run, far above what ``evaluate.py`` and the tables use.
TRAIN_EVAL_SEEDS = range(1_000_000, 1_100_000)

#: ``tune_agent.py``'s trials are evaluated (and their hyperparameters chosen) on these: a range of its own,
#: so a run trained with the chosen ``best.yml`` is evaluated during training (``TRAIN_EVAL_SEEDS``) and
#: by ``evaluate.py`` on instances the choice never saw.
SWEEP_EVAL_SEEDS = range(1_100_000, 1_200_000)

#: A resumed SB3 run reseeds its training envs in this range (:func:`agents.training.resume_seed`):
#: above every seed evaluation uses, with room below ``2**32`` (the largest seed SB3's global
#: seeding, ``numpy.random.seed``, accepts) for the ``+ i`` that env ``i`` adds.
RESUME_SEEDS = range(2**31, 2**31 + 2**30)
RESUME_SEED_BASE = RESUME_SEEDS.start
RESUME_SEED_SPAN = len(RESUME_SEEDS)

#: DUS-R (:class:`agents.reinforce.Reinforce`) draws every episode group's reset seed uniformly from
#: this range: a range of its own, so a group never replays an evaluation, table or tuning episode
#: (drawn from all seeds below ``2**31``, a 100k-step run of 1,250 groups would hit one of the
#: ~140,000 seeds of the ranges above with a chance of about 8%).
DUS_R_GROUP_SEEDS = range(2**31 + 2**30, 2**32)

#: Every range by name, for the disjointness test and for readers.
ALL_RANGES: dict[str, range] = {
    "training": TRAINING_SEEDS,
    "evaluation": EVALUATION_SEEDS,
    "main table": MAIN_TABLE_SEEDS,
    "generalisation table": GENERALISATION_SEEDS,
    "design probes": DESIGN_PROBE_SEEDS,
    "held out": HELD_OUT_SEEDS,
    "tuning": TUNING_SEEDS,
    "selection": SELECTION_SEEDS,
    "mix design": MIX_DESIGN_SEEDS,
    "plugin table": PLUGIN_TABLE_SEEDS,
    "in-training evaluation": TRAIN_EVAL_SEEDS,
    "sweep evaluation": SWEEP_EVAL_SEEDS,
    "resume": RESUME_SEEDS,
    "DUS-R groups": DUS_R_GROUP_SEEDS,
}


def overlapping_ranges(ranges: dict[str, range] = ALL_RANGES) -> list[tuple[str, str]]:
    """Neighbouring ranges (ordered by first seed) that share a seed: empty exactly when all are disjoint."""
    names = sorted(ranges, key=lambda name: ranges[name].start)
    return [(a, b) for a, b in itertools.pairwise(names) if ranges[a].stop > ranges[b].start]
