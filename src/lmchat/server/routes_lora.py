"""vLLM's live LoRA routes: ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``.

Mounted only with ``--enable-lora-loading`` (vLLM's ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), which needs an API key
(the routes change what the server serves). A loaded adapter is then a ``model`` requests may name; unloading
refuses new requests for it at once and answers when the requests using it have ended. A bad adapter is a 400
and changes nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import PlainTextResponse, Response

from lmchat.errors import InvalidRequestError
from lmchat.server.protocol import OpenAIRequest

router = APIRouter()


class LoadLoraAdapterRequest(OpenAIRequest):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)
    load_inplace: bool = False  # vLLM: replace an adapter of the same name (only false here)


class UnloadLoraAdapterRequest(OpenAIRequest):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None  # vLLM's bookkeeping id; names identify adapters here


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadLoraAdapterRequest, request: Request) -> Response:
    state = request.app.state.lmchat
    state.check_ready()
    if body.load_inplace:
        raise InvalidRequestError("load_inplace is not supported: unload the adapter first, then load it again.",
                                  param="load_inplace")
    if body.lora_name in state.served_names:
        raise InvalidRequestError(f"'{body.lora_name}' is the base model's served name; choose another lora_name.",
                                  param="lora_name")
    await state.chat_model.aload_adapter(body.lora_name, body.lora_path)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadLoraAdapterRequest, request: Request) -> Response:
    state = request.app.state.lmchat
    await state.chat_model.aunload_adapter(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
