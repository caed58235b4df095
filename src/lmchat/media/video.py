"""Video: decoding with PyAV and sampling frames the way LLaMA-Factory's mm_plugin does.

Sampling (``_get_video_sample_indices``): ``n = max(1, floor(duration_s * video_fps))``, capped by the frame count
and ``video_maxlen``, then ``n`` indices evenly spread over all frames (``np.linspace(0, total - 1, n)`` truncated
to integers). Where the file declares no frame count (WebM, MKV), the frames are counted from the packets, and
where the stream declares no duration, the container's is used (LLaMA-Factory fails on both). A file that ends
before the frames it declares is refused as truncated instead of silently giving fewer frames.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmchat.media.kinds import FORMAT_HINTS, VIDEO_DEMUXERS, ffmpeg_options, media_error
from lmchat.media.options import MediaOptions
from lmchat.media.sources import MediaBytes


@dataclass(frozen=True)
class VideoClip:
    """Sampled RGB frames of one video (resized under ``video_max_pixels``/``video_min_pixels``).

    ``fps`` is the sampled frames per second (``len(frames) / duration_s``: what Qwen2-VL-style processors take as
    the video's fps); ``frame_indices`` are the sampled frames' indices in the source, ``source_fps`` its frame
    rate (None for a list of frames).
    """

    frames: tuple[Any, ...]
    duration_s: float
    fps: float
    frame_indices: tuple[int, ...]
    source_fps: float | None = None


def sample_indices(total_frames: int, duration_s: float, video_fps: float, video_maxlen: int) -> list[int]:
    """LLaMA-Factory's frame sampling: which of ``total_frames`` frames to keep (0 frames: the first maxlen)."""
    import numpy as np

    if total_frames == 0:
        return np.linspace(0, video_maxlen - 1, video_maxlen).astype(np.int32).tolist()
    count = max(1, math.floor(duration_s * video_fps))
    count = min(total_frames, video_maxlen, count)
    return np.linspace(0, total_frames - 1, count).astype(np.int32).tolist()


def _av() -> Any:
    from lmchat.errors import require

    require("av", "media")
    import av

    return av


def decode_video(blob: MediaBytes, options: MediaOptions, param: str | None = None) -> VideoClip:
    """Sample ``blob``'s first video stream: frames as PIL images (not resized yet), with their timing."""
    av = _av()
    origin = blob.origin[:1].upper() + blob.origin[1:]
    try:
        container = av.open(io.BytesIO(blob.data), "r", options=ffmpeg_options(VIDEO_DEMUXERS))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise media_error(param, f"{origin} is not a video PyAV can read, or it is truncated ({ffmpeg_reason(exc)}). "
                                 f"{FORMAT_HINTS['video']}") from None
    with container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise media_error(param, f"{origin} has no video stream. {FORMAT_HINTS['video']}")
        _check_frame_size(stream, options, origin, param)
        duration = _duration(stream, container)
        _check_duration(duration, options, origin, param)
        total = stream.frames or _count_frames(container, stream, origin, param)
        source_fps = float(stream.average_rate) if stream.average_rate else None
        if duration is None:
            duration = total / (source_fps or options.video_fps)
            _check_duration(duration, options, origin, param)
        indices = sample_indices(total, duration, options.video_fps, options.video_maxlen)
        frames = _decode_frames(container, stream, indices, total, origin, param)
    return VideoClip(tuple(frames), duration, len(frames) / duration if duration else options.video_fps,
                     tuple(indices), source_fps)


def _duration(stream: Any, container: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _check_frame_size(stream: Any, options: MediaOptions, origin: str, param: str | None) -> None:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > options.max_decoded_pixels:
        raise media_error(param, f"{origin}'s frames are {width}x{height} pixels, more than the "
                                 f"{options.max_decoded_pixels:,} decoded at most (max_decoded_pixels).")


def _check_duration(duration: float | None, options: MediaOptions, origin: str, param: str | None) -> None:
    if duration is not None and duration > options.video_max_duration_s:
        raise media_error(param, f"{origin} lasts {duration:.1f} s, longer than the {options.video_max_duration_s:g} s "
                                 "allowed (video_max_duration_s); send a shorter clip.")


def _count_frames(container: Any, stream: Any, origin: str, param: str | None) -> int:
    """The frame count from the packets (no decoding), for files that do not declare it; rewinds afterwards."""
    av = _av()
    try:
        count = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
    except av.error.FFmpegError as exc:
        raise media_error(param, f"{origin} is damaged ({ffmpeg_reason(exc)}); send the complete file.") from None
    if count == 0:
        raise media_error(param, f"{origin} has no frames.")
    return count


def _decode_frames(container: Any, stream: Any, indices: Sequence[int], total: int, origin: str,
                   param: str | None) -> list[Any]:
    """The frames at ``indices`` (sorted, distinct), decoding in order and stopping after the last one."""
    av = _av()
    wanted, frames, seen = set(indices), [], 0
    stream.thread_type = "AUTO"
    try:
        for seen, frame in enumerate(container.decode(stream), start=1):
            if seen - 1 in wanted:
                frames.append(frame.to_image())
                if len(frames) == len(indices):
                    break
    except av.error.FFmpegError as exc:
        raise media_error(param, f"{origin} is damaged or truncated: decoding stopped after {seen} of the {total} "
                                 f"frames it declares ({ffmpeg_reason(exc)}); send the complete file.") from None
    if len(frames) < len(indices):
        raise media_error(param, f"{origin} is truncated: decoding stopped after {seen} of the {total} frames it "
                                 "declares; send the complete file.")
    return frames


def ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's message without its errno and file-name decorations."""
    text = str(exc)
    text = text.split("] ", 1)[-1] if text.startswith("[Errno") else text
    return re.sub(r":? '<none>'( returned -?\d+)?", "", text) or type(exc).__name__
