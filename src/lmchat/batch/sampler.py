"""The sampler API: ``generate`` streams one answer, ``batch_infer`` answers a whole dataset, both on ``ChatModel``.

Rows are submitted concurrently (up to ``concurrency`` at once) so that batching engines keep their batches full;
a row that fails is returned as a :class:`Sample` with ``failure`` set, and the others go on. A sample's answers
are the facade's :class:`~lmchat.chat.response.Response` objects, as they come (raw text, parsed content,
reasoning and tool calls, finish reason).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmchat.batch.rows import Row, Source, convert, detect_format
from lmchat.chat.chat_model import ChatModel
from lmchat.chat.response import Response
from lmchat.errors import InvalidRequestError, LmchatError

DEFAULT_CONCURRENCY = 64
ROW_TOKEN_BUDGETS = ("max_tokens", "max_completion_tokens", "max_new_tokens")  # a row's names of its answer budget


@dataclass
class RowFailure:
    """Why a row has no answer."""

    type: str
    message: str
    param: str | None = None
    http_status: int = 500


@dataclass
class Sample:
    """The result of one row: its prompt as sent, its answers (``n`` of them) or the failure."""

    row: Row
    prompt: str | None
    prompt_tokens: int = 0
    answers: list[Response] = field(default_factory=list)
    failure: RowFailure | None = None

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def predict(self) -> list[str]:
        return [answer.response_text for answer in self.answers]

    @property
    def completion_tokens(self) -> int:
        return sum(answer.response_length for answer in self.answers)


def run_token_cap(config: Any) -> int | None:
    """The run's own ``max_new_tokens`` (given by the user, not the default): what caps a row's answer budget."""
    return config.max_new_tokens if "max_new_tokens" in config.model_fields_set else None


def capped_generation(generation: Mapping[str, Any], row_generation: Mapping[str, Any],
                      cap: int | None) -> tuple[dict[str, Any], bool]:
    """The run's options with a row's own on top, cut to the run's limits; and whether anything was cut. The
    limits: ``cap`` (the run's max_new_tokens) for a row's answer budget, and the run's own ``n`` for a row's
    ``n`` (a row cannot ask for more answers than the run was given)."""
    merged = {**generation, **row_generation}
    limits = {key: cap for key in ROW_TOKEN_BUDGETS} if cap is not None else {}
    if _is_count(generation.get("n")):
        limits["n"] = generation["n"]
    over = False
    for key, limit in limits.items():
        value = merged.get(key)
        if _is_count(value) and value > limit:
            merged[key], over = limit, True
    return merged, over


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Sampler:
    """Sample answers from a :class:`ChatModel`: one conversation streamed, or a dataset in one call.

    ``model`` is a ChatModel (kept open) or its config dict (the sampler opens and closes its own).
    ``generation`` holds per-call options (``n``, ``seed``, ``stop``, ``temperature``, ...) for every row.
    """

    def __init__(self, model: ChatModel | Mapping[str, Any], *, concurrency: int = DEFAULT_CONCURRENCY,
                 **generation: Any) -> None:
        if concurrency < 1:
            raise InvalidRequestError("concurrency must be at least 1.", param="concurrency")
        self._owns_model = not isinstance(model, ChatModel)
        self.model = ChatModel(dict(model)) if self._owns_model else model
        self.concurrency = concurrency
        self.generation = generation
        self.max_new_tokens_cap = run_token_cap(self.model.config)
        self.capped_rows = 0
        try:  # a bad option fails here, once, not on every row
            self.model.resolve_options(**generation)
        except LmchatError:
            self.close()
            raise

    # --- one conversation -----------------------------------------------------------------------------
    async def agenerate(self, messages: Sequence[Mapping[str, Any]], tools: Any = None,
                        **generation: Any) -> AsyncIterator[str]:
        """The answer's text, piece by piece."""
        async for piece in self.model.astream_chat(messages, tools=tools, **{**self.generation, **generation}):
            yield piece

    def generate(self, messages: Sequence[Mapping[str, Any]], tools: Any = None, **generation: Any) -> Iterator[str]:
        return self.model.stream_chat(messages, tools=tools, **{**self.generation, **generation})

    # --- datasets -------------------------------------------------------------------------------------
    async def asample(self, row: Row) -> Sample:
        """Answer one row; an error becomes the sample's ``failure``."""
        if row.error:
            return _failed(row, None, InvalidRequestError(row.error))
        try:
            _check_media(row)
            prepared = await self.model.aprepare(  # the media fetched and decoded once, off the event loop
                row.messages, row.system, row.tools, row.images or None, row.videos or None, row.audios or None,
                **self._row_generation(row),
            )
        except LmchatError as exc:
            return _failed(row, None, exc)
        try:
            responses = await self.model.agenerate(prepared, request_id=f"batch-{row.position}-{uuid.uuid4().hex[:8]}")
        except LmchatError as exc:
            return _failed(row, prepared.prompt, exc)
        except Exception as exc:  # noqa: BLE001 - an unexpected engine failure costs this row only; the run goes on
            return _failed(row, prepared.prompt, exc)
        return Sample(row, prepared.prompt, prepared.prompt_tokens, responses)

    def _row_generation(self, row: Row) -> dict[str, Any]:
        """The run's options with the row's own on top; a row's token budget cannot exceed the run's cap."""
        generation, over = capped_generation(self.generation, row.generation, self.max_new_tokens_cap)
        adapter = self._row_adapter(row)
        if adapter is not None:
            generation["adapter"] = adapter
        self.capped_rows += over
        return generation

    def _row_adapter(self, row: Row) -> str | None:
        """A row's adapter column wins over the run's ``adapter``; an OpenAI Batch body's ``model`` chooses an
        adapter only when it names a served one (else the base model answers, as before)."""
        if row.adapter is None:
            return None
        if row.is_openai_batch and row.adapter not in {a.name for a in self.model.adapters}:
            return None
        return row.adapter

    async def astream_samples(self, rows: Iterable[Row]) -> AsyncIterator[Sample]:
        """Samples in the order they finish, with at most ``concurrency`` rows in flight."""
        pending: set[asyncio.Task[Sample]] = set()
        queue = iter(rows)
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < self.concurrency:
                    row = next(queue, None)
                    if row is None:
                        exhausted = True
                    else:
                        pending.add(asyncio.ensure_future(self.asample(row)))
                if not pending:
                    break
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def abatch_infer(self, dataset: Any) -> list[Sample]:
        """One sample per row, in the dataset's order. ``dataset``: rows, dicts in any supported format, or a path."""
        rows = as_rows(dataset)
        samples = {sample.row.position: sample async for sample in self.astream_samples(rows)}
        return [samples[row.position] for row in rows]

    def batch_infer(self, dataset: Any) -> list[Sample]:
        return self.model.run_sync(self.abatch_infer(dataset))

    def stream_samples(self, rows: Iterable[Row]) -> Iterator[Sample]:
        """Sync :meth:`astream_samples`; leaving early cancels the rows in flight."""
        return self.model.iterate_sync(self.astream_samples(rows))

    # --- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def as_rows(dataset: Any) -> list[Row]:
    """Rows from :class:`Row` objects, dicts (format detected from the first one), or a file/folder path."""
    if isinstance(dataset, (str, Path)):
        from lmchat.batch.sources import load_rows

        return load_rows(inputs=[dataset])
    items = list(dataset)
    if all(isinstance(item, Row) for item in items):
        return [item if item.position == i else _with_position(item, i) for i, item in enumerate(items)]
    first = next((item for item in items if isinstance(item, Mapping)), None)
    if first is None:
        raise InvalidRequestError("batch_infer needs rows: Row objects, dicts, or a path.", param="dataset")
    format, columns = detect_format(first)
    source = Source("row", format, columns)
    return [convert(item, source, i, i) for i, item in enumerate(items)]


def _with_position(row: Row, position: int) -> Row:
    from dataclasses import replace

    return replace(row, position=position)


def _check_media(row: Row) -> None:
    for kind, items in (("image", row.images), ("video", row.videos), ("audio", row.audios)):
        for item in items:
            if isinstance(item, str) and "://" not in item and not item.startswith("data:") and not Path(item).is_file():
                raise InvalidRequestError(f"The {kind} file {item} does not exist.", param=f"{kind}s")


def _failed(row: Row, prompt: str | None, exc: Exception) -> Sample:
    if isinstance(exc, LmchatError):
        failure = RowFailure(type(exc).__name__, exc.message, exc.param, exc.http_status)
    else:
        failure = RowFailure(type(exc).__name__, str(exc) or type(exc).__name__)
    return Sample(row, prompt, failure=failure)
