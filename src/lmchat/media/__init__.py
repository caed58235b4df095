"""Images, video and audio: typed inputs, safe fetching and decoding, shaped the way LLaMA-Factory shapes them.

    from lmchat.media import MediaLoader, MediaOptions, FetchPolicy

    loader = MediaLoader(MediaOptions(image_max_pixels=512 * 512), FetchPolicy(allowed_local_media_path="/data"))
    image = loader.load_image("https://example.com/cat.webp", param="images[0]")   # RGB PIL image
    clip = loader.load_video("/data/clip.mp4")                                     # VideoClip(frames, fps, ...)
    audio = loader.load_audio((samples, 44100))                                    # AudioClip(waveform, 16000)
    media = await loader.aload_all(images=[...], videos=[...], audios=[...])       # LoadedMedia

Importing this package imports no Pillow, PyAV, soundfile, numpy or httpcore; they are imported when media is decoded, and
a missing one raises MissingDependencyError naming ``pip install 'lmchat[media]'``.
"""

from lmchat.media.audio import AudioClip
from lmchat.media.kinds import MEDIA_KINDS, MediaKind
from lmchat.media.loader import LoadedMedia, MediaLoader
from lmchat.media.options import MediaOptions
from lmchat.media.policy import FetchPolicy, Resolver, system_resolver
from lmchat.media.sources import MediaBytes, read_source
from lmchat.media.video import VideoClip, sample_indices

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("fetch_url", "Fetched"):  # httpcore is imported only when something is fetched
        import importlib

        return getattr(importlib.import_module("lmchat.media.fetch"), name)
    raise AttributeError(f"module 'lmchat.media' has no attribute {name!r}")


__all__ = [
    "MEDIA_KINDS",
    "AudioClip",
    "FetchPolicy",
    "Fetched",
    "LoadedMedia",
    "MediaBytes",
    "MediaKind",
    "MediaLoader",
    "MediaOptions",
    "Resolver",
    "VideoClip",
    "fetch_url",
    "read_source",
    "sample_indices",
    "system_resolver",
]
