"""``evaluate.py --backend ray``: the benchmark's batches as Ray tasks, on one machine or a cluster.

Why a module of its own: Ray is an optional extra (``dus_env[ray]``), so nothing here runs at import
time that needs it; :mod:`agents.benchmark` and ``evaluate.py`` stay importable without Ray, and
only asking for the ray backend imports it. The batches are the local backend's
(:func:`agents.benchmark.batches`) and each task runs :func:`agents.benchmark.run_batch`, the same
function a local worker process runs, so the two backends produce the same episodes bit for bit:

- seeds: every episode is reset with its own seed; nothing depends on which process runs it, in
  which order, or on what that process ran before (its cached agents and vector envs are reset
  with each episode's seed). The batches, and so the vector env sizes, are the same too: the
  numbers of a batched computation may differ in their last bits with its size, not with its place;
- threads: Ray sets ``OMP_NUM_THREADS`` to a task's CPU count (1) only where the node's environment
  does not set it, so torch's thread count would follow each node's setup; the task calls
  :func:`agents.benchmark.limit_threads` (one torch thread) as local workers do, whatever the node;
- the trust setting (``--trusted-only``, i.e. ``DUS_ENV_TRUSTED_ONLY=1``): a cluster's workers do
  not inherit the driver's environment, so the driver's setting travels with each task;
- model paths: a worker's working folder is not the driver's, so a relative ``ppo:runs/...`` is made
  absolute in the driver (:func:`worker_jobs`); on a cluster that path must exist on every node (a
  shared filesystem). Labels and the specs written to the result files stay as given.

A worker that dies (killed, out of memory, node lost) has its task run again on another worker
(:data:`MAX_RETRIES`); an exception raised by the episode code itself is not retried (it would fail
the same way again) and reaches ``evaluate.py`` as itself, which keeps the finished batches.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

from .benchmark import EpisodeJob, limit_threads, run_batch
from .ray_cluster import import_ray
from .rollout import EpisodeResult
from .specs import absolute_spec
from .trust import ENV_VAR, refuses_pickle

#: How many times a batch whose worker died is run again before the evaluation fails. Batches are
#: pure functions of their jobs, so a retry gives the same episodes.
MAX_RETRIES = 3

#: The Ray task's function name: Ray titles a worker process ``ray::evaluate_batch`` while it runs one
#: (``ps`` shows it; the tests find the workers running a batch by it).
TASK_NAME = "evaluate_batch"


def evaluate_batch(jobs: Sequence[EpisodeJob], trusted_only: bool) -> list[EpisodeResult]:
    """The body of one Ray task: :func:`agents.benchmark.run_batch` with the process set up as a local worker's.

    :param jobs: one batch (one agent on one env, a chunk of seeds), as :func:`agents.benchmark.batches` makes it.
    :param trusted_only: refuse pickle loads (``evaluate.py --trusted-only``) in this worker; without it the
        node's own setting holds (a node set to refuse them keeps refusing).
    """
    limit_threads()
    if trusted_only:
        os.environ[ENV_VAR] = "1"
    return run_batch(jobs)


def remote_evaluate_batch(ray: Any) -> Any:
    """:func:`evaluate_batch` as a Ray remote function: one CPU (one torch thread), retried when its worker dies."""
    return ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(evaluate_batch)


def worker_jobs(batch: Sequence[EpisodeJob]) -> list[EpisodeJob]:
    """The batch as a Ray worker gets it: model paths absolute (:func:`agents.specs.absolute_spec`), as a
    worker runs in a working folder of its own. The labels stay, so the results are the local backend's."""
    specs = {job.spec: absolute_spec(job.spec) for job in batch}
    return [dataclasses.replace(job, spec=specs[job.spec]) for job in batch]


def run_batches(
    work: Sequence[Sequence[EpisodeJob]], feature: str = "evaluate.py --backend ray"
) -> Iterator[tuple[Sequence[EpisodeJob], list[EpisodeResult]]]:
    """Run every batch as a Ray task on the Ray this process is connected to; yield ``(batch, results)`` as each finishes.

    All batches are submitted at once and Ray runs as many at a time as the cluster has CPUs (one per
    task). Results come back in finishing order, one batch at a time, so the caller can count and
    write them as they arrive. Ray must already be running or joined (:func:`agents.ray_cluster.connect`).

    On an error or Ctrl-C (the generator is closed or an exception passes through it) the batches
    not finished yet are cancelled: queued ones never start, running ones are interrupted.

    :param work: the batches, e.g. :func:`agents.benchmark.batches` of the plan's jobs.
    :param feature: the command that needs Ray, for the missing-extra message.
    :raises dus_env.extras.MissingExtraError: Ray is not installed.
    """
    ray = import_ray(feature)
    task = remote_evaluate_batch(ray)
    trusted_only = refuses_pickle()  # this process's setting (evaluate.py --trusted-only sets it), for every worker
    pending = {task.remote(worker_jobs(batch), trusted_only): batch for batch in work}
    waiting = list(pending)
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            batch = pending.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except ray.exceptions.RayTaskError as error:
                # The episode code's own exception, as the local backend raises it (a one-line message for
                # evaluate.py); Ray's remote traceback stays chained to it, for the error log.
                raise error.cause from error
            yield batch, results
    finally:
        for ref in pending:
            ray.cancel(ref)
