"""Audio: decoding with soundfile (WAV, FLAC, OGG/Opus, MP3, ...) or PyAV (M4A/AAC, WebM, video files), then mono
(the channels' mean, as LLaMA-Factory does) at ``audio_sampling_rate``, resampled with soxr.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

from lmchat.media.kinds import AUDIO_DEMUXERS, FORMAT_HINTS, ffmpeg_options, media_error
from lmchat.media.options import MediaOptions
from lmchat.media.sources import MediaBytes
from lmchat.media.video import ffmpeg_reason

# A decode that ends this much short of the length the file declares means the file is truncated.
_TRUNCATION_TOLERANCE = 0.02


@dataclass(frozen=True)
class AudioClip:
    """One mono float32 waveform (values in [-1, 1] for decoded files) and its sampling rate in Hz."""

    waveform: Any  # numpy.ndarray, shape (samples,), dtype float32
    sampling_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.sampling_rate


def audio_from_array(array: Any, sampling_rate: int | float, options: MediaOptions,
                     param: str | None = None) -> AudioClip:
    """An (array, rate) pair: 1-D, or 2-D with channels on the shorter axis; ints are scaled to [-1, 1]."""
    import numpy as np

    samples = np.asarray(array)
    if samples.ndim == 2:
        samples = samples.mean(axis=0 if samples.shape[0] < samples.shape[1] else 1)
    if samples.ndim != 1 or samples.size == 0:
        raise media_error(param, f"An audio array must be 1-D (mono) or 2-D (channels x samples), not shape "
                                 f"{np.shape(array)}.")
    if samples.dtype.kind in "iu":
        samples = samples / float(np.iinfo(samples.dtype).max + 1)
    elif samples.dtype.kind != "f":
        raise media_error(param, f"An audio array must hold floats or integers, not {samples.dtype}.")
    if not np.isfinite(samples).all():
        raise media_error(param, "The audio array holds NaN or infinite values.")
    rate = _checked_rate(sampling_rate, param)
    _check_duration(samples.size / rate, options, "The audio array", param)
    return AudioClip(resample(samples.astype(np.float32), rate, options.audio_sampling_rate), options.audio_sampling_rate)


def _checked_rate(rate: Any, param: str | None) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0 or rate != int(rate):
        raise media_error(param, f"The audio sampling rate must be a positive whole number of Hz, not {rate!r}.")
    return int(rate)


def resample(waveform: Any, from_rate: int, to_rate: int) -> Any:
    """``waveform`` (1-D float32) from ``from_rate`` to ``to_rate`` Hz with soxr's high-quality filter."""
    if from_rate == to_rate:
        return waveform
    from lmchat.errors import require

    require("soxr", "media")
    import soxr

    return soxr.resample(waveform, from_rate, to_rate, quality="HQ")


def decode_audio(blob: MediaBytes, options: MediaOptions, param: str | None = None) -> AudioClip:
    """Decode ``blob`` with soundfile, or PyAV for the formats libsndfile does not read."""
    origin = blob.origin[:1].upper() + blob.origin[1:]
    _check_riff_length(blob.data, origin, param)
    from lmchat.errors import require

    require("soundfile", "media")
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(blob.data)) as sound:
            declared, rate = sound.frames, sound.samplerate
            _check_duration(declared / rate, options, origin, param)
            samples = sound.read(dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        if str(exc).startswith("Error opening"):  # a format libsndfile does not know: let FFmpeg try
            return _decode_with_av(blob, options, origin, str(exc).rsplit(": ", 1)[-1], param)
        raise media_error(param, f"{origin} is broken or truncated ({str(exc).rsplit(': ', 1)[-1]}); send the "
                                 "complete file.") from None
    if len(samples) == 0:
        raise media_error(param, f"{origin} holds no audio samples (is it truncated?); send the complete file.")
    if len(samples) < declared * (1 - _TRUNCATION_TOLERANCE):
        raise media_error(param, f"{origin} ends after {len(samples)} of the {declared} samples it declares: the "
                                 "file is truncated; send the complete file.")
    return AudioClip(resample(samples.mean(axis=1), rate, options.audio_sampling_rate), options.audio_sampling_rate)


def _check_riff_length(data: bytes, origin: str, param: str | None) -> None:
    """A WAV file shorter than its RIFF header says is truncated (libsndfile silently reads what is there)."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        (declared,) = struct.unpack("<I", data[4:8])
        if declared != 0xFFFFFFFF and len(data) < (declared + 8) * (1 - _TRUNCATION_TOLERANCE):
            raise media_error(param, f"{origin} is {len(data):,} bytes but its header declares {declared + 8:,}: "
                                     "the file is truncated; send the complete file.")


def _decode_with_av(blob: MediaBytes, options: MediaOptions, origin: str, soundfile_reason: str,
                    param: str | None) -> AudioClip:
    from lmchat.errors import require

    require("av", "media")
    import av
    import numpy as np

    try:
        with av.open(io.BytesIO(blob.data), "r", options=ffmpeg_options(AUDIO_DEMUXERS)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise media_error(param, f"{origin} has no audio track. {FORMAT_HINTS['audio']}")
            rate = stream.rate or stream.codec_context.sample_rate
            declared = _av_duration(stream, container)
            if declared is not None:
                _check_duration(declared, options, origin, param)
            chunks = _decode_planar(container, stream, rate, options, origin, param)
    except av.error.FFmpegError as exc:
        raise media_error(param, f"{origin} is not audio that soundfile or PyAV can read ({soundfile_reason}; "
                                 f"{ffmpeg_reason(exc)}). {FORMAT_HINTS['audio']}") from None
    waveform = np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if waveform.size == 0:
        raise media_error(param, f"{origin} holds no audio samples (is it truncated?); send the complete file.")
    if declared is not None and waveform.size < declared * rate * (1 - _TRUNCATION_TOLERANCE) - rate * 0.1:
        raise media_error(param, f"{origin} ends after {waveform.size / rate:.2f} of the {declared:.2f} s it "
                                 "declares: the file is truncated; send the complete file.")
    return AudioClip(resample(waveform, rate, options.audio_sampling_rate), options.audio_sampling_rate)


def _decode_planar(container: Any, stream: Any, rate: int, options: MediaOptions, origin: str,
                   param: str | None) -> list[Any]:
    """Float32 (channels, samples) chunks at the stream's own rate, stopping at the duration cap."""
    import av

    resampler = av.AudioResampler(format="fltp", rate=rate)
    chunks, total = [], 0
    for frame in container.decode(stream):
        for converted in resampler.resample(frame):
            chunks.append(converted.to_ndarray())
            total += chunks[-1].shape[1]
        _check_duration(total / rate, options, origin, param)
    for converted in resampler.resample(None):
        chunks.append(converted.to_ndarray())
    return chunks


def _av_duration(stream: Any, container: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _check_duration(duration: float, options: MediaOptions, origin: str, param: str | None) -> None:
    if duration > options.audio_max_duration_s:
        raise media_error(param, f"{origin} lasts {duration:.1f} s, longer than the {options.audio_max_duration_s:g} s "
                                 "allowed (audio_max_duration_s); send a shorter clip.")
