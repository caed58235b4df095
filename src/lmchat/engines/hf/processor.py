"""A multimodal model's processor: loading it (with or without torchvision), what media it takes, and turning a
rendered prompt plus decoded media into the model's inputs.

The processor is the model's own (``AutoProcessor``, PIL/NumPy image processors: ``use_fast=False``), so the
prompt's placeholders expand to exactly the tokens the model expects and the pixels are what ``generate`` would
get. Where the processor cannot be built because its video processor needs torchvision, it is built from its parts
with a torchvision-free video processor (:mod:`lmchat.engines.hf.frames`) for the families lmchat has one for;
for the others video is refused, saying why.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from lmchat.errors import ConfigError, InvalidRequestError, ModelNotFoundError, UnsupportedError

logger = logging.getLogger(__name__)
NO_TORCHVISION = "its transformers video processor needs torchvision, which is not installed"


def is_multimodal(model_config: Any) -> bool:
    """Whether the checkpoint has a vision or audio encoder (and so a processor for its media)."""
    return any(getattr(model_config, name, None) is not None for name in ("vision_config", "audio_config"))


def load_processor(source: str, hub: dict[str, Any]) -> Any:
    """The checkpoint's processor: ``AutoProcessor`` with PIL/NumPy image processors, else built from its parts
    without torchvision (see the module's docstring)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, backend="pil", **hub)
    except Exception as exc:  # noqa: BLE001 - most often a video processor that needs torchvision
        first = exc
    try:
        processor = processor_from_parts(source, hub)
    except Exception as exc:  # noqa: BLE001 - both ways failed: say both
        raise ModelNotFoundError(f"Cannot load the processor of '{source}': {_line(first)} (built from its parts: "
                                 f"{_line(exc)})") from None
    logger.info("Built the processor of %s from its parts (%s).", source, _line(first))
    return processor


def processor_options(processor: Any, config: Any, source: str) -> dict[str, Any]:
    """The keyword arguments every processor call gets from LLaMA-Factory's processor settings:
    ``image_do_pan_and_scan`` (Gemma 3's image processor crops a large, long image into up to four more images
    beside the whole one). A model whose processor cannot is a ConfigError naming the setting."""
    if not config.image_do_pan_and_scan:
        return {}
    images = getattr(processor, "image_processor", None)
    if images is None or not hasattr(images, "do_pan_and_scan"):
        kind = type(images).__name__ if images is not None else "no image processor"
        raise ConfigError(f"image_do_pan_and_scan applies to models whose image processor pans and scans (Gemma 3); "
                          f"'{source}' has {kind}, which does not. Leave image_do_pan_and_scan out.",
                          param="image_do_pan_and_scan")
    return {"do_pan_and_scan": True}


def processor_from_parts(source: str, hub: dict[str, Any]) -> Any:
    """The processor class named in ``processor_config.json``, given its tokenizer, PIL image processor, feature
    extractor, and a torchvision-free video processor (or one that refuses video, saying why)."""
    import transformers
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    processor_dict = _json(source, "processor_config.json", hub)
    name = processor_dict.get("processor_class")
    if not name or not hasattr(transformers, name):
        raise ModelNotFoundError(f"processor_config.json names no known processor class ({name!r})")
    cls = _lenient(getattr(transformers, name))
    parts = []
    for attribute in cls.get_attributes():
        if "tokenizer" in attribute:
            parts.append(AutoTokenizer.from_pretrained(source, **hub))
        elif attribute == "image_processor":
            parts.append(AutoImageProcessor.from_pretrained(source, backend="pil", **hub))
        elif attribute in ("feature_extractor", "audio_processor"):
            parts.append(AutoFeatureExtractor.from_pretrained(source, **hub))
        elif attribute == "video_processor":
            parts.append(_video_processor(processor_dict.get("video_processor")
                                          or _json(source, "video_preprocessor_config.json", hub)))
        else:
            raise ModelNotFoundError(f"{name} needs a {attribute}, which lmchat cannot build on its own")
    template = _chat_template(source, hub)
    extra = {} if template is None else {"chat_template": template}
    return cls.from_args_and_dict(parts, processor_dict, **extra)


def _video_processor(config: dict[str, Any]) -> Any:
    from lmchat.engines.hf.frames import frame_processor

    made = frame_processor(config)
    return made if made is not None else unavailable_video_processor(NO_TORCHVISION)


@functools.cache
def _lenient(cls: type) -> type:
    """``cls`` accepting lmchat's video processors: transformers checks each part's class against the base class
    it exports, which does not exist without torchvision."""
    from transformers.video_processing_utils import VideoProcessorMixin

    def check_argument_for_proper_class(self: Any, name: str, argument: Any) -> Any:
        if name == "video_processor" and isinstance(argument, VideoProcessorMixin):
            return type(argument)
        return cls.check_argument_for_proper_class(self, name, argument)

    return type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class,
                                       "__module__": cls.__module__})


@functools.cache
def _unavailable_video_processor_class() -> type:
    """The stand-in class, made on first use: its base comes from transformers' video processing module, whose
    import (~3 s, with the image-processing stack) a text-only model never needs."""
    from transformers.video_processing_utils import VideoProcessorMixin

    class UnavailableVideoProcessor(VideoProcessorMixin):
        """Stands in for a video processor that cannot run here; refuses video with the reason."""

        model_input_names: list[str] = []

        def __init__(self, reason: str) -> None:
            self.unavailable = reason

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise UnsupportedError(f"This model cannot take video here: {self.unavailable}.", param="videos")

        def to_dict(self) -> dict[str, Any]:
            return {}

    return UnavailableVideoProcessor


def unavailable_video_processor(reason: str) -> Any:
    """A video processor that refuses video, saying ``reason``."""
    return _unavailable_video_processor_class()(reason)


def _json(source: str, name: str, hub: dict[str, Any]) -> dict[str, Any]:
    from transformers.utils import cached_file

    keys = ("revision", "cache_dir", "token")
    path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                       **{key: hub[key] for key in keys if key in hub})
    if path is None:
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _chat_template(source: str, hub: dict[str, Any]) -> str | None:
    from transformers.utils import cached_file

    path = cached_file(source, "chat_template.jinja", _raise_exceptions_for_missing_entries=False,
                       **{key: hub[key] for key in ("revision", "cache_dir", "token") if key in hub})
    if path is not None:
        with open(path, encoding="utf-8") as file:
            return file.read()
    return _json(source, "chat_template.json", hub).get("chat_template")


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- what it takes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MediaSupport:
    """The media kinds a processor takes, and why a kind it has a part for cannot be used."""

    images: bool = False
    videos: bool = False
    audios: bool = False
    notes: tuple[tuple[str, str], ...] = ()  # (kind, why not)


def media_support(processor: Any) -> MediaSupport:
    if processor is None:
        return MediaSupport()
    video = getattr(processor, "video_processor", None)
    unavailable = getattr(video, "unavailable", None)
    audio = getattr(processor, "feature_extractor", None) or getattr(processor, "audio_processor", None)
    return MediaSupport(
        images=getattr(processor, "image_processor", None) is not None,
        videos=video is not None and unavailable is None,
        audios=audio is not None,
        notes=(("videos", unavailable),) if unavailable else (),
    )


# --- prompt + media -> model inputs -------------------------------------------------------------------------
@dataclass(eq=False)
class MediaInputs:
    """A prompt with media as the model takes it: the token ids with every placeholder expanded, and the
    processor's other outputs (pixel values, grids, token types, audio features ...), kept for the prefill. The
    ``n`` requests of one call share this object (and the prompt embeddings computed from it once)."""

    token_ids: tuple[int, ...]
    features: dict[str, torch.Tensor]
    embeds: Any = field(default=None, repr=False)  # lmchat.engines.hf.multimodal.PromptEmbeds, made at prefill


def encode(processor: Any, prompt: str, media: Any, sampling_rate: int,
           image_options: dict[str, Any] | None = None) -> MediaInputs:
    """Run the processor on ``prompt`` and the decoded ``media`` (a facade ``Media``); ``image_options``: the
    config's image-processor options (:func:`processor_options`). A prompt whose placeholders do not fit the media
    is an InvalidRequestError saying so."""
    kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt", "add_special_tokens": False}
    if media.images:
        kwargs["images"] = list(media.images)
        kwargs.update(image_options or {})
    if media.videos:
        kwargs.update(_video_kwargs(media.videos))
    if media.audios:
        kwargs["audio"] = [clip.waveform for clip in media.audios]
        kwargs["sampling_rate"] = sampling_rate
    try:
        batch = processor(**kwargs)
    except UnsupportedError:
        raise
    except (ValueError, TypeError, IndexError) as exc:
        raise InvalidRequestError(
            f"The model's processor could not take this prompt with its media: {_line(exc)}. Each medium must appear "
            "in the prompt as the model's placeholder, which the model's own chat template writes (a named "
            "template may not).", param="messages") from None
    ids = tuple(int(i) for i in batch["input_ids"][0])
    features = {key: value for key, value in batch.items()
                if key not in ("input_ids", "attention_mask") and isinstance(value, torch.Tensor)}
    return MediaInputs(ids, features)


def _video_kwargs(clips: Any) -> dict[str, Any]:
    import numpy as np
    from transformers.video_utils import VideoMetadata

    videos = [np.stack([np.asarray(frame) for frame in clip.frames]) for clip in clips]
    metadata = [VideoMetadata(total_num_frames=len(clip.frames), fps=clip.fps, duration=clip.duration_s,
                              frames_indices=list(range(len(clip.frames)))) for clip in clips]
    return {"videos": videos, "video_metadata": metadata, "do_sample_frames": False}
