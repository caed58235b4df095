"""Batch inference over datasets: rows from files and LLaMA-Factory datasets, the sampler API, resumable results.

``Sampler(chat_model).batch_infer(rows)`` answers a dataset in one call; ``run_batch`` (and ``lmchat infer``)
writes the results as JSON lines while they arrive and resumes an interrupted run.
"""

from lmchat.batch.rows import Row
from lmchat.batch.runner import BatchOptions, run_batch
from lmchat.batch.sampler import RowFailure, Sample, Sampler
from lmchat.batch.sources import load_rows

__all__ = ["BatchOptions", "Row", "RowFailure", "Sample", "Sampler", "load_rows", "run_batch"]
