"""MediaOptions: how decoded media is shaped (LLaMA-Factory's names and defaults) and the limits on decoding."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmchat.errors import ConfigError

# Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS): about 9,459 x 9,459 pixels.
PILLOW_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


class MediaOptions(BaseModel):
    """Sizes, frame rates and limits for images, video and audio (the LLaMA-Factory keys keep its meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_max_pixels: int = Field(768 * 768, ge=1, description="Images with more pixels are scaled down to this.")
    image_min_pixels: int = Field(32 * 32, ge=1, description="Images with fewer pixels are scaled up to this.")
    video_max_pixels: int = Field(256 * 256, ge=1, description="Video frames with more pixels are scaled down.")
    video_min_pixels: int = Field(16 * 16, ge=1, description="Video frames with fewer pixels are scaled up.")
    video_fps: float = Field(2.0, gt=0, description="Frames sampled per second of video.")
    video_maxlen: int = Field(128, ge=1, description="Most frames sampled from one video.")
    audio_sampling_rate: int = Field(16000, ge=1, description="Audio is resampled to this rate (Hz), mono.")
    max_decoded_pixels: int = Field(
        PILLOW_MAX_PIXELS, ge=1,
        description="Largest image or video frame (width x height) decoded; larger files are refused unread.",
    )
    video_max_duration_s: float = Field(600.0, gt=0, description="Longest video accepted, in seconds.")
    audio_max_duration_s: float = Field(600.0, gt=0, description="Longest audio accepted, in seconds.")

    @model_validator(mode="after")
    def _min_below_max(self) -> MediaOptions:
        for kind in ("image", "video"):
            low, high = getattr(self, f"{kind}_min_pixels"), getattr(self, f"{kind}_max_pixels")
            if high < low:
                raise ValueError(f"{kind}_max_pixels ({high}) cannot be smaller than {kind}_min_pixels ({low})")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MediaOptions:
        """Validate ``values``; an unknown key or a bad value raises ConfigError naming it."""
        from lmchat.config.validation import explain

        try:
            return cls(**values)
        except ValidationError as exc:
            raise explain(exc, kind="media option", valid_names=cls.model_fields, error_cls=ConfigError) from None
