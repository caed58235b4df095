"""The output line of one sample: LLaMA-Factory's ``generated_predictions.jsonl`` fields, or an OpenAI Batch
output line for OpenAI Batch input."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from lmchat.batch.sampler import Sample
from lmchat.chat.response import Response


def to_record(sample: Sample, model_name: str) -> dict[str, Any]:
    return openai_batch_record(sample, model_name) if sample.row.is_openai_batch else prediction_record(sample)


def prediction_record(sample: Sample) -> dict[str, Any]:
    """``{id, prompt, predict, label, finish_reason, prompt_tokens, completion_tokens}`` plus ``tool_calls`` and
    ``reasoning`` when parsed, or ``error`` when the row failed. ``predict`` is a list when ``n > 1``."""
    many = len(sample.answers) > 1
    record: dict[str, Any] = {
        "id": sample.id,
        "prompt": sample.prompt,
        "predict": _one_or_list([a.response_text for a in sample.answers], many),
        "label": sample.row.label,
        "finish_reason": _one_or_list([a.finish_reason for a in sample.answers], many),
        "prompt_tokens": sample.prompt_tokens,
        "completion_tokens": sample.completion_tokens,
    }
    if any(answer.tool_calls for answer in sample.answers):
        calls = [[{"name": call.name, "arguments": call.arguments} for call in a.tool_calls] for a in sample.answers]
        record["tool_calls"] = _one_or_list(calls, many)
    if any(answer.reasoning_text for answer in sample.answers):
        record["reasoning"] = _one_or_list([a.reasoning_text for a in sample.answers], many)
    if sample.failure is not None:
        failure = sample.failure
        record["error"] = {"type": failure.type, "message": failure.message, "param": failure.param}
    return record


def openai_batch_record(sample: Sample, model_name: str) -> dict[str, Any]:
    """OpenAI's Batch output line: ``{id, custom_id, response: {status_code, request_id, body}, error}``."""
    request_id = f"req_{uuid.uuid4().hex}"
    line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": sample.id}
    if sample.failure is not None:
        failure = sample.failure
        line["response"] = {"status_code": failure.http_status, "request_id": request_id, "body": None}
        line["error"] = {"code": failure.type, "message": failure.message, "param": failure.param}
        return line
    choices = [
        {"index": answer.index, "message": _message(answer), "logprobs": None, "finish_reason": answer.finish_reason}
        for answer in sample.answers
    ]
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": {
            "prompt_tokens": sample.prompt_tokens,
            "completion_tokens": sample.completion_tokens,
            "total_tokens": sample.prompt_tokens + sample.completion_tokens,
        },
    }
    line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    line["error"] = None
    return line


def record_id(line: Mapping[str, Any]) -> str | None:
    """The row id an output line answers (``custom_id`` for OpenAI Batch lines)."""
    value = line.get("custom_id", line.get("id"))
    return str(value) if value is not None else None


def is_failed(line: Mapping[str, Any]) -> bool:
    return bool(line.get("error"))


def label_and_prediction(line: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (first) prediction and the label of a successful prediction line, for metrics."""
    if is_failed(line) or not isinstance(line.get("label"), str):
        return None
    predict = line.get("predict")
    predict = predict[0] if isinstance(predict, list) and predict else predict
    return (predict, line["label"]) if isinstance(predict, str) else None


def _one_or_list(values: list[Any], many: bool) -> Any:
    if many:
        return values
    return values[0] if values else None


def _message(answer: Response) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.reasoning_text:
        message["reasoning_content"] = answer.reasoning_text
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in answer.tool_calls
        ]
    return message
