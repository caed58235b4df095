"""Video processors that need no torchvision, for the families whose transformers video processor does.

transformers' video processors (``BaseVideoProcessor``) are written on torchvision, whose PyPI wheels do not load
with every torch build (CPU builds among them); without it a Qwen2-VL processor cannot even be built. lmchat's
frames are already decoded and sampled (:mod:`lmchat.media`), so what is left is per-frame resizing and
normalising, which the model's PIL/NumPy image processor does, and the family's own grouping of frames into
patches. :class:`Qwen2VLFrameProcessor` does that for Qwen2-VL and Qwen2.5-VL the way their video processor does
(frames resized to multiples of ``patch_size * merge_size`` within the video's pixel budget, the last frame
repeated to a multiple of ``temporal_patch_size``, patches flattened in the same order), and reads the same
``video_preprocessor_config.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, SizeDict
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata

# the transformers video processor classes each one stands in for
FRAME_PROCESSORS: dict[str, str] = {
    "Qwen2VLVideoProcessor": "Qwen2VLFrameProcessor",
    "Qwen2_5_VLVideoProcessor": "Qwen2VLFrameProcessor",
}


class Qwen2VLFrameProcessor(VideoProcessorMixin):
    """Qwen2-VL's video processing on decoded frames with NumPy and PIL (no torchvision, no frame sampling)."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, size: dict[str, int] | None = None, patch_size: int = 14, temporal_patch_size: int = 2,
                 merge_size: int = 2, image_mean: Any = None, image_std: Any = None, min_pixels: int | None = None,
                 max_pixels: int | None = None, **kwargs: Any) -> None:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        size = dict(size or {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768})
        size["shortest_edge"] = min_pixels or size.get("shortest_edge") or size.get("min_pixels")
        size["longest_edge"] = max_pixels or size.get("longest_edge") or size.get("max_pixels")
        self.size = {"shortest_edge": size["shortest_edge"], "longest_edge": size["longest_edge"]}
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.image_mean = list(image_mean or OPENAI_CLIP_MEAN)
        self.image_std = list(image_std or OPENAI_CLIP_STD)
        self._frames = Qwen2VLImageProcessorPil(size=dict(self.size), patch_size=patch_size, merge_size=merge_size,
                                                temporal_patch_size=temporal_patch_size, image_mean=self.image_mean,
                                                image_std=self.image_std)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Qwen2VLFrameProcessor:
        keys = ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "min_pixels",
                "max_pixels")
        return cls(**{key: config[key] for key in keys if key in config})

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def preprocess(self, videos: Any, video_metadata: Any = None, return_tensors: Any = None, fps: Any = None,
                   **kwargs: Any) -> BatchFeature:
        """``videos``: a list of (frames, height, width, 3) uint8 arrays, already sampled. ``fps``: the rate they
        were sampled at (one number or one per video), which Qwen2.5-VL turns into time positions."""
        videos = [np.asarray(video) for video in videos]
        patches, grids = [], []
        for video in videos:
            flat, grid = self._patches(video)
            patches.append(flat)
            grids.append(grid)
        rates = fps if isinstance(fps, (list, tuple)) else [fps] * len(videos)
        metadata = list(video_metadata or [
            VideoMetadata(total_num_frames=len(video), fps=float(rate or 2.0), frames_indices=list(range(len(video))))
            for video, rate in zip(videos, rates)
        ])
        data = {"pixel_values_videos": np.concatenate(patches, axis=0),
                "video_grid_thw": np.array(grids, dtype=np.int64)}
        out = BatchFeature(data=data, tensor_type=return_tensors)
        out["video_metadata"] = metadata
        return out

    def _patches(self, video: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """One video [T, H, W, C] -> flat patches [grid_t * grid_h * grid_w, C * tp * p * p] and its grid."""
        size = SizeDict(**self.size)
        factor = self.patch_size * self.merge_size
        frames = []
        for frame in video:
            chw = np.moveaxis(frame, -1, 0)
            chw = self._frames.resize(chw, size=size, resample=self._frames.resample, factor=factor)
            chw = self._frames.normalize(self._frames.rescale(chw, 1 / 255), self.image_mean, self.image_std)
            frames.append(np.asarray(chw, dtype=np.float32))
        stacked = np.stack(frames)  # [T, C, H, W]
        if pad := -len(stacked) % self.temporal_patch_size:
            stacked = np.concatenate([stacked, np.repeat(stacked[-1:], pad, axis=0)])
        t, channels, height, width = stacked.shape
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        grid_t, grid_h, grid_w = t // tp, height // p, width // p
        patches = stacked.reshape(grid_t, tp, channels, grid_h // m, m, p, grid_w // m, m, p)
        patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # as the torchvision processor's permute
        return patches.reshape(grid_t * grid_h * grid_w, channels * tp * p * p), [grid_t, grid_h, grid_w]

    def get_num_of_video_patches(self, num_frames: int, height: int, width: int, videos_kwargs: Any = None) -> int:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor = self.patch_size * self.merge_size
        h, w = smart_resize(height, width, factor, self.size["shortest_edge"], self.size["longest_edge"])
        grid_t = -(-num_frames // self.temporal_patch_size)
        return grid_t * (h // self.patch_size) * (w // self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        return {"video_processor_type": "Qwen2VLVideoProcessor", "size": dict(self.size),
                "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
                "merge_size": self.merge_size, "image_mean": self.image_mean, "image_std": self.image_std}


def frame_processor(config: dict[str, Any]) -> VideoProcessorMixin | None:
    """The torchvision-free stand-in for the video processor ``config`` describes (its
    ``video_preprocessor_config.json``), or None when lmchat has none for that family."""
    name = FRAME_PROCESSORS.get(str(config.get("video_processor_type")))
    return {"Qwen2VLFrameProcessor": Qwen2VLFrameProcessor}[name].from_config(config) if name else None
