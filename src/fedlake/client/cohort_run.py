"""Run a cohort's clients together: one vectorised local training where the trainer allows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedlake.client.cohort import fit_cohort
from fedlake.client.local import (
    ClientFailure,
    ClientResult,
    ClientTask,
    Prepared,
    corrected,
    finish_client,
    prepare_client,
)
from fedlake.core.transform import Transform

if TYPE_CHECKING:
    from fedlake.client.local import ClientJob


def _failure(client_id: str, exc: Exception) -> ClientFailure:
    return ClientFailure(client_id, f"{type(exc).__name__}: {exc}")


def _stacked_step(preps: Sequence[Prepared], base: Transform | None) -> Transform | None:
    """The cohort's local step on stacked params: SCAFFOLD corrections row by row, then ``base``."""
    if preps[0].correction is None:
        return base
    return corrected(base, np.stack([p.correction for p in preps]))  # type: ignore[misc]


def vectorisable(preps: Sequence[Prepared], task: ClientTask) -> bool:
    """Whether these clients can train as one cohort (same start, same stacked step)."""
    if len(preps) < 2:
        return False
    first = preps[0]
    if first.config.dp is not None:
        return False
    if first.local_step is not None and not first.local_step.stacked:
        return False
    # per-client random masks (structured uploads) or starts (FedPer) differ: one by one
    return all(p.trainable is task.mask and p.start is None for p in preps)


def run_cohort(job: ClientJob, task: ClientTask, client_ids: Sequence[str]) -> list[ClientResult]:
    """Every client's result, in ``client_ids`` order; the same numbers as one-by-one runs.

    Each client is prepared and finished exactly as :func:`fedlake.client.local.run_client`
    does (same generators, consumed in the same order); only local training is shared.
    A client whose preparation or finishing fails is a ClientFailure; if the shared
    training itself fails, every client is re-run alone so the failure stays its own.
    """
    algorithm = job.algorithm
    results: dict[str, ClientResult] = {}
    preps: list[Prepared] = []
    for cid in client_ids:
        try:
            prep = prepare_client(task, cid, job.data, job.trainer, algorithm, attack=job.attack)
        except Exception as exc:  # a client's failure must never stop the round
            results[cid] = _failure(cid, exc)
            continue
        if isinstance(prep, ClientFailure):
            results[cid] = prep
        else:
            preps.append(prep)
    fits = None
    if vectorisable(preps, task):
        try:
            fits = fit_cohort(
                job.trainer,
                preps[0].global_params,
                [(p.x, p.y) for p in preps],
                config=algorithm.local,
                rngs=[p.rng for p in preps],
                max_steps=[p.config.max_steps for p in preps],
                grad_transform=_stacked_step(preps, preps[0].local_step),
            )
        except Exception:  # find the culprit: fresh preparations, one client at a time
            fits = None
            preps = [p for p in (_again(job, task, p.client_id, results) for p in preps) if p]
    if fits is None:
        for prep in preps:
            results[prep.client_id] = _alone(job, task, prep)
    else:
        for prep, fit in zip(preps, fits, strict=True):
            try:
                results[prep.client_id] = finish_client(prep, fit, task, job.trainer, algorithm)
            except Exception as exc:
                results[prep.client_id] = _failure(prep.client_id, exc)
    return [results[cid] for cid in client_ids]


def _again(
    job: ClientJob, task: ClientTask, cid: str, results: dict[str, ClientResult]
) -> Prepared | None:
    """A fresh preparation (its generator untouched by a failed shared training)."""
    try:
        prep = prepare_client(task, cid, job.data, job.trainer, job.algorithm, attack=job.attack)
    except Exception as exc:
        results[cid] = _failure(cid, exc)
        return None
    if isinstance(prep, ClientFailure):
        results[cid] = prep
        return None
    return prep


def _alone(job: ClientJob, task: ClientTask, prep: Prepared) -> ClientResult:
    """Train and finish one prepared client."""
    try:
        fit = job.trainer.fit(
            prep.start_params,
            prep.x,
            prep.y,
            config=prep.config,
            rng=prep.rng,
            grad_transform=prep.grad_transform(),
        )
        return finish_client(prep, fit, task, job.trainer, job.algorithm)
    except Exception as exc:
        return _failure(prep.client_id, exc)
