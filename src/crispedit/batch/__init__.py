"""Batch editing at dataset scale: ``crispedit batch JOBS -o OUTDIR``, locally (a process pool) or on Ray.

>>> from crispedit.batch import plan_items, run_batch          # doctest: +SKIP
>>> result = run_batch("jobs.csv", "dataset/", workers=2)     # doctest: +SKIP

Modules: :mod:`~crispedit.batch.table` (job tables, validation, keys and seeds), :mod:`~crispedit.batch.worker`
(one item: the same ``run_edit`` as ``crispedit edit``), :mod:`~crispedit.batch.runner` (process pool / Ray),
:mod:`~crispedit.batch.dataset` (layout, records, dataset card), :mod:`~crispedit.batch.flows` (workflow tables).
"""

from __future__ import annotations

from crispedit.batch.api import run_batch
from crispedit.batch.table import BatchTableError, Item, plan_items

__all__ = ["run_batch", "plan_items", "Item", "BatchTableError"]
