"""Media on vLLM: which kinds the loaded model takes, and a rendered prompt plus decoded media as vLLM's own
processed input (``multi_modal_data`` through vLLM's renderer).

lmchat renders the prompt with the model's chat template (each medium one placeholder, as the model's processor
expects it) and tokenizes it; vLLM's multimodal processor, the model's own, expands each placeholder to the
medium's tokens and computes the pixel values / features. That happens once per chat call, here, before any
generation: the expanded token ids are what the facade budgets with, and the processed input (an ``EngineInput``)
is what every request of the call sends, so vLLM does not process the media again. It is rendered past vLLM's
sender-side media cache (``skip_mm_cache``), so it holds the processed media itself: a prepared call that is never
run (``ChatModel.prepare``) cannot leave that cache believing the engine holds media it never received.
"""

from __future__ import annotations

from typing import Any

from lmchat.errors import InvalidRequestError, UnsupportedError

VLLM_MODALITIES = {"images": "image", "videos": "video", "audios": "audio"}


def supported_media(engine: Any) -> dict[str, bool]:
    """``{"images": bool, "videos": bool, "audios": bool}``: the modalities vLLM's processor of the loaded model
    takes (none for a text-only model)."""
    if not engine.model_config.is_multimodal_model:
        return dict.fromkeys(VLLM_MODALITIES, False)
    limits = engine.renderer.get_mm_processor().info.get_supported_mm_limits()
    return {kind: modality in limits for kind, modality in VLLM_MODALITIES.items()}


def multi_modal_data(media: Any) -> dict[str, list[Any]]:
    """vLLM's ``multi_modal_data`` of lmchat's decoded media: PIL images, ``(frames, metadata)`` videos (the
    frames lmchat sampled, not sampled again) and ``(waveform, sampling_rate)`` audios (vLLM resamples to the
    model's rate)."""
    import numpy as np

    data: dict[str, list[Any]] = {}
    if media.images:
        data["image"] = list(media.images)
    if media.videos:
        data["video"] = [(np.stack([np.asarray(frame) for frame in clip.frames]),
                          {"total_num_frames": len(clip.frames), "fps": clip.fps, "duration": clip.duration_s,
                           "frames_indices": list(range(len(clip.frames))), "do_sample_frames": False})
                         for clip in media.videos]
    if media.audios:
        data["audio"] = [(clip.waveform, float(clip.sampling_rate)) for clip in media.audios]
    return data


async def render_media_prompt(engine: Any, prompt_ids: list[int], media: Any) -> dict[str, Any]:
    """vLLM's processed input (its ``EngineInput``: expanded ``prompt_token_ids``, processed media) of a
    tokenized prompt and its media; a prompt whose placeholders do not fit the media is an InvalidRequestError."""
    prompt = {"prompt_token_ids": prompt_ids, "multi_modal_data": multi_modal_data(media)}
    try:
        (engine_input,) = await engine.renderer.render_cmpl_async([prompt], skip_mm_cache=True)
    except UnsupportedError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, RuntimeError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidRequestError(
            f"vLLM's processor of this model could not take this prompt with its media: {line}. Each medium must "
            "appear in the prompt as the model's placeholder, which the model's own chat template writes (a named "
            "template may not).", param="messages") from None
    return engine_input
