"""MediaLoader: any accepted media input -> what processors take (RGB PIL images, VideoClip, AudioClip).

One loader is made from the config (MediaOptions + FetchPolicy) and used for every request. ``load_*`` are
blocking (fetching and decoding); ``aload_*`` and :meth:`MediaLoader.aload_all` run them on worker threads so an
event loop is never blocked. Every error is an InvalidRequestError whose ``param`` is the one given (e.g.
``images[0]`` or ``messages[1].content[0].image_url``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lmchat.media.audio import AudioClip, audio_from_array, decode_audio
from lmchat.media.image import decode_image, fit_pixels, image_from_object, is_array, is_image_object, to_rgb
from lmchat.media.kinds import MediaKind, media_error
from lmchat.media.options import MediaOptions
from lmchat.media.policy import FetchPolicy
from lmchat.media.sources import MediaBytes, is_byte_source, read_source
from lmchat.media.video import VideoClip, decode_video


@dataclass(frozen=True)
class LoadedMedia:
    """The decoded media of one request, in the order given."""

    images: tuple[Any, ...] = ()
    videos: tuple[VideoClip, ...] = ()
    audios: tuple[AudioClip, ...] = ()


@dataclass(frozen=True)
class MediaLoader:
    """Reads (under ``policy``) and decodes (under ``options``) images, videos and audio."""

    options: MediaOptions = field(default_factory=MediaOptions)
    policy: FetchPolicy = field(default_factory=FetchPolicy)

    # --- images -------------------------------------------------------------------------------
    def load_image(self, source: Any, *, param: str | None = None) -> Any:
        """An RGB PIL image within ``image_min_pixels``..``image_max_pixels``."""
        return self._image(source, self.options.image_max_pixels, self.options.image_min_pixels, param)

    def _image(self, source: Any, max_pixels: int, min_pixels: int, param: str | None) -> Any:
        if is_image_object(source):
            image = image_from_object(source, param)
            if image.width * image.height > self.options.max_decoded_pixels:
                raise media_error(param, f"The image is {image.width}x{image.height} pixels, more than the "
                                         f"{self.options.max_decoded_pixels:,} accepted (max_decoded_pixels).")
        else:
            image = decode_image(self._read(source, "image", param), self.options.max_decoded_pixels, param)
        return fit_pixels(to_rgb(image), max_pixels, min_pixels)

    # --- video --------------------------------------------------------------------------------
    def load_video(self, source: Any, *, param: str | None = None) -> VideoClip:
        """Sampled frames (RGB, within ``video_min_pixels``..``video_max_pixels``) with their timing.

        ``source`` is a video file (path, URL, data: URL, bytes), or its frames already sampled: a list of image
        sources or a (frames, height, width, channels) array, taken as they are at ``video_fps``.
        """
        if _is_frame_list(source):
            return self._frames(list(source), param)
        clip = decode_video(self._read(source, "video", param), self.options, param)
        frames = tuple(self._fit_frame(frame) for frame in clip.frames)
        return VideoClip(frames, clip.duration_s, clip.fps, clip.frame_indices, clip.source_fps)

    def _frames(self, items: list[Any], param: str | None) -> VideoClip:
        count, maxlen = len(items), self.options.video_maxlen
        if count == 0:
            raise media_error(param, "The video's list of frames is empty.")
        if count > maxlen:
            raise media_error(param, f"The video has {count} frames, more than video_maxlen ({maxlen}); sample it "
                                     "down, send the video file, or raise video_maxlen.")
        frames = tuple(
            self._image(item, self.options.video_max_pixels, self.options.video_min_pixels,
                        f"{param}[{i}]" if param else f"frame {i}")
            for i, item in enumerate(items)
        )
        fps = self.options.video_fps
        return VideoClip(frames, count / fps, fps, tuple(range(count)), None)

    def _fit_frame(self, frame: Any) -> Any:
        return fit_pixels(to_rgb(frame), self.options.video_max_pixels, self.options.video_min_pixels)

    # --- audio --------------------------------------------------------------------------------
    def load_audio(self, source: Any, *, param: str | None = None) -> AudioClip:
        """Mono float32 at ``audio_sampling_rate``.

        ``source`` is a file (path, URL, data: URL, bytes), an ``(array, sampling_rate)`` pair, a datasets-style
        ``{"array": ..., "sampling_rate": ...}``, or a bare 1-D array taken to be at ``audio_sampling_rate``
        (LLaMA-Factory's convention).
        """
        if isinstance(source, tuple) and len(source) == 2 and not is_byte_source(source[0]):
            return audio_from_array(source[0], source[1], self.options, param)
        if isinstance(source, dict) and source.get("array") is not None:
            if "sampling_rate" not in source:
                raise media_error(param, "An audio dict with an 'array' needs its 'sampling_rate'.")
            return audio_from_array(source["array"], source["sampling_rate"], self.options, param)
        if is_array(source):
            return audio_from_array(source, self.options.audio_sampling_rate, self.options, param)
        return decode_audio(self._read(source, "audio", param), self.options, param)

    # --- any kind -------------------------------------------------------------------------------
    def load(self, kind: MediaKind, source: Any, *, param: str | None = None) -> Any:
        """``load_image``, ``load_video`` or ``load_audio`` by ``kind``."""
        if kind not in _LOADERS:
            raise ValueError(f"unknown media kind {kind!r}")
        return getattr(self, _LOADERS[kind])(source, param=param)

    async def aload(self, kind: MediaKind, source: Any, *, param: str | None = None) -> Any:
        """:meth:`load` on a worker thread."""
        return await asyncio.to_thread(self.load, kind, source, param=param)

    async def aload_all(self, images: Sequence[Any] = (), videos: Sequence[Any] = (),
                        audios: Sequence[Any] = ()) -> LoadedMedia:
        """Every medium of one request, loaded concurrently; errors name ``images[i]``/``videos[i]``/``audios[i]``.

        The first error is raised once all loads are done (no thread is left running behind the caller).
        """
        groups = (("image", images), ("video", videos), ("audio", audios))
        jobs = [self.aload(kind, item, param=f"{kind}s[{i}]") for kind, items in groups for i, item in enumerate(items)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        counts = [len(images), len(videos)]
        return LoadedMedia(tuple(results[: counts[0]]), tuple(results[counts[0]: sum(counts)]),
                           tuple(results[sum(counts):]))

    def _read(self, source: Any, kind: MediaKind, param: str | None) -> MediaBytes:
        if not is_byte_source(source):
            raise media_error(param, f"Cannot read {type(source).__name__} as {'an' if kind == 'image' else 'a'} "
                                     f"{kind}: give a path, an http(s) or data: URL, or bytes.")
        return read_source(source, kind, self.policy, param)


_LOADERS = {"image": "load_image", "video": "load_video", "audio": "load_audio"}


def _is_frame_list(source: Any) -> bool:
    if isinstance(source, (list, tuple)):
        return True
    return getattr(source, "ndim", None) == 4  # a (frames, height, width, channels) array
