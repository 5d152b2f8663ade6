"""The batched training core: ``N`` independent trainings of the same shape, stepped as one computation.

Why batched: one decision step trains a tiny model, where almost all of the time is per-operation
framework overhead. Stacking the ``N`` models' parameters (``[N, in, out]`` per layer) and running
batched matrix products, one optimizer update and one validation pass for all of them pays that
overhead once per iteration instead of ``N`` times. ``DUSEnv`` is the ``N = 1`` case of the same code.

Modules, one idea each:

* :mod:`.random` -- counter-based random numbers, so every env's draws depend on its own seed only;
* :mod:`.model` -- the stacked model: parameters in one flat buffer, forward passes, per-env init;
* :mod:`.optim` -- Adam and SGD over the flat buffer, with per-env (and per-segment) step counts;
* :mod:`.data` -- the stacked task splits and the per-env row streams (epochs of seeded permutations);
* :mod:`.learners` -- one training iteration of the ``joint`` and ``alternating`` learners;
* :mod:`.evaluation` -- fused and per-modality (balanced) accuracies of every env on a split.

:mod:`dus_env.core` puts them together with the monitor, the observation and the reward.
"""
