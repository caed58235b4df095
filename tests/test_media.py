"""Decoding media (lmchat.media): real files made here with Pillow, PyAV and soundfile; broken ones; limits.

No network: URLs are covered by test_media_fetch.py. No torch.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("PIL")
av = pytest.importorskip("av")
sf = pytest.importorskip("soundfile")
from PIL import Image  # noqa: E402

from lmchat.errors import ConfigError, InvalidRequestError  # noqa: E402
from lmchat.media import FetchPolicy, MediaLoader, MediaOptions, VideoClip, sample_indices  # noqa: E402
from lmchat.media.image import fitted_size  # noqa: E402

RED = (200, 30, 40)


# --- builders ---------------------------------------------------------------------------------------------------
def image_bytes(fmt: str, size=(40, 30), color=RED, mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt, **save)
    return buffer.getvalue()


def noise_png(size=(120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def video_bytes(frames=25, fps=10, size=(64, 48), codec="libx264", fmt="mp4", noise=0, **options) -> bytes:
    """Frame i is a flat grey of level 10*i, so a decoded frame tells which source frame it was."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # a real file: faststart rewrites the file when it closes
        path = os.path.join(folder, "clip")
        _write_video(path, frames, fps, size, codec, fmt, noise, options)
        return Path(path).read_bytes()


def _write_video(path, frames, fps, size, codec, fmt, noise, options) -> None:
    rng = np.random.default_rng(0)
    with av.open(path, "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), min(10 * i, 250), np.uint8)
            if noise:  # hard to compress, so every frame takes many bytes
                pixels = np.clip(pixels + rng.integers(0, noise, pixels.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_level(frame: Image.Image) -> int:
    return round(np.asarray(frame).mean() / 10)


def sine(seconds=1.0, rate=44100, freq=440.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def audio_bytes(fmt: str, seconds=1.0, rate=44100, **write) -> bytes:
    """Stereo: a 440 Hz sine on the left, silence on the right (so the mono mean has amplitude 0.25)."""
    left = sine(seconds, rate)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([left, np.zeros_like(left)], axis=1), rate, format=fmt, **write)
    return buffer.getvalue()


def m4a_bytes(seconds=1.0, rate=44100) -> bytes:
    buffer = io.BytesIO()
    samples = sine(seconds, rate)
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for start in range(0, len(samples), 1024):
            chunk = samples[start:start + 1024]
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, np.zeros_like(chunk)]), format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def dominant_frequency(waveform, rate) -> float:
    spectrum = np.abs(np.fft.rfft(waveform))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[spectrum.argmax()])


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def loader(tmp_path) -> MediaLoader:
    return MediaLoader(policy=FetchPolicy(allowed_local_media_path=tmp_path))


def raises(param: str | None, match: str):
    """pytest.raises for an InvalidRequestError with this param and message."""

    class Check:
        def __enter__(self):
            self._ctx = pytest.raises(InvalidRequestError, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            result = self._ctx.__exit__(*exc)
            if result:
                assert self.info.value.param == param, self.info.value.param
            return result

    return Check()


# --- options ----------------------------------------------------------------------------------------------------
def test_options_default_to_llamafactorys_values():
    options = MediaOptions()
    assert (options.image_max_pixels, options.image_min_pixels) == (768 * 768, 32 * 32)
    assert (options.video_max_pixels, options.video_min_pixels) == (256 * 256, 16 * 16)
    assert (options.video_fps, options.video_maxlen, options.audio_sampling_rate) == (2.0, 128, 16000)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="image_max_pixels .* cannot be smaller than image_min_pixels"):
        MediaOptions.from_dict({"image_max_pixels": 10, "image_min_pixels": 100})
    with pytest.raises(ConfigError, match="did you mean 'video_maxlen'"):
        MediaOptions.from_dict({"video_max_len": 10})
    with pytest.raises(ConfigError, match="video_fps"):
        MediaOptions.from_dict({"video_fps": 0})


# --- images -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
                                       ("GIF", "image/gif"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")])
def test_every_common_format_loads_from_every_kind_of_source(loader, tmp_path, fmt, mime):
    data = image_bytes(fmt)
    path = tmp_path / f"cat.{fmt.lower()}"
    path.write_bytes(data)
    sources = [str(path), path, f"file://{path}", data, bytearray(data), data_url(mime, data), io.BytesIO(data),
               {"bytes": data, "path": None}, {"bytes": None, "path": str(path)}]
    for source in sources:
        image = loader.load_image(source, param="images[0]")
        assert image.mode == "RGB" and image.size == (40, 30)
        assert all(abs(a - b) <= 6 for a, b in zip(image.getpixel((20, 15)), RED)), (fmt, type(source))


def test_a_webp_data_url_is_accepted_which_llamafactory_refuses(loader):
    image = loader.load_image(data_url("image/webp", image_bytes("WEBP", lossless=True)))
    assert image.getpixel((0, 0)) == RED


def test_data_url_variants(loader):
    data = image_bytes("PNG")
    text = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    for url in (f"data:image/png;base64,{text}", f"data:IMAGE/PNG;charset=x;base64,{text}",
                f"data:;base64,{text}", f"data:application/octet-stream;base64,{text}",
                f"data:image/png;base64,{urlsafe}", f"data:image/png;base64,{text[:40]}\n{text[40:]}"):
        assert loader.load_image(url).getpixel((1, 1)) == RED, url[:40]
    from urllib.parse import quote_from_bytes

    assert loader.load_image(f"data:image/png,{quote_from_bytes(data)}").getpixel((1, 1)) == RED


@pytest.mark.parametrize("url, message", [
    ("data:text/plain;base64,aGVsbG8=", "is 'text/plain', not an image"),
    ("data:image/png;base64,@@@notbase64@@@", "not valid base64"),
    ("data:image/png;base64", "has no ','"),
    ("data:image/png;base64,", "is empty"),
])
def test_bad_data_urls_are_refused(loader, url, message):
    with raises("images[2]", message):
        loader.load_image(url, param="images[2]")


def test_data_urls_past_the_byte_cap_are_refused_before_decoding():
    loader = MediaLoader(policy=FetchPolicy(max_bytes=1000))
    with raises("images[0]", "more than the 1,000 bytes allowed"):
        loader.load_image(data_url("image/png", noise_png()), param="images[0]")


def test_data_urls_can_be_switched_off():
    with raises(None, "data: URLs are not allowed"):
        MediaLoader(policy=FetchPolicy(allowed_schemes={"https"})).load_image(data_url("image/png", image_bytes("PNG")))


@pytest.mark.parametrize("data, message", [
    (b"definitely not an image" * 4, "is not an image Pillow can read. Send a PNG, JPEG"),
    (noise_png()[:400], "broken or truncated"),
    (image_bytes("JPEG", size=(300, 200))[:300], "broken or truncated"),
    (image_bytes("WEBP", size=(300, 200))[:60], "broken or truncated"),
    (b"", "is empty"),
])
def test_broken_images_are_refused_with_what_to_do(loader, data, message):
    with raises("images[1]", message):
        loader.load_image(data, param="images[1]")


def test_images_past_the_decoding_limit_are_refused_before_decoding():
    loader = MediaLoader(MediaOptions(max_decoded_pixels=10_000))
    with raises("images[0]", "is 200x100 pixels, more than the 10,000 decoded at most"):
        loader.load_image(image_bytes("PNG", size=(200, 100)), param="images[0]")
    with raises("images[0]", "more than the 10,000 accepted"):
        loader.load_image(Image.new("RGB", (200, 100)), param="images[0]")


@pytest.mark.parametrize("size, expected", [
    ((1000, 800), (858, 686)),  # sqrt(589824 / 800000) = 0.8587 -> int(858.65), int(686.92)
    ((768, 768), (768, 768)),  # exactly the budget: untouched
    ((4000, 3000), (886, 665)),
    ((10, 10), (32, 32)),  # below image_min_pixels: sqrt(1024 / 100) = 3.2
    ((20, 5), (64, 16)),
    ((100000, 1), (100000, 1)),
    ((3000000, 1), (768 * 768, 1)),  # LLaMA-Factory would resize to a zero height: a side never goes below 1
])
def test_the_pixel_budget_follows_llamafactorys_rule(size, expected):
    assert fitted_size(*size, 768 * 768, 32 * 32) == expected


def test_loaded_images_are_resized_to_the_budget():
    loader = MediaLoader(MediaOptions(image_max_pixels=100 * 100, image_min_pixels=50 * 50))
    assert loader.load_image(image_bytes("PNG", size=(400, 100))).size == (200, 50)
    assert loader.load_image(image_bytes("PNG", size=(20, 20))).size == (50, 50)


def test_transparency_is_composited_on_white(loader):
    image = Image.new("RGBA", (10, 10), (0, 0, 255, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    loaded = MediaLoader(MediaOptions(image_min_pixels=1)).load_image(buffer.getvalue())
    assert loaded.getpixel((5, 5)) == (255, 255, 255) and loaded.getpixel((0, 0)) == (0, 0, 255)
    palette = Image.new("P", (10, 10), 0)
    palette.info["transparency"] = 0
    assert MediaLoader(MediaOptions(image_min_pixels=1)).load_image(palette).getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied(loader):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = image_bytes("JPEG", size=(60, 40), exif=exif)
    assert loader.load_image(data).size == (40, 60)


def test_an_animated_image_gives_its_first_frame(loader):
    frames = [Image.new("RGB", (40, 40), color) for color in (RED, (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert loader.load_image(buffer.getvalue()).getpixel((5, 5)) == RED


def test_arrays_become_images(loader):
    hwc = np.zeros((40, 50, 3), np.uint8)
    hwc[..., 0] = 255
    assert loader.load_image(hwc).getpixel((0, 0)) == (255, 0, 0)
    assert loader.load_image(np.moveaxis(hwc, -1, 0)).size == (50, 40)  # CHW, as torch lays it out
    assert loader.load_image(np.full((40, 50), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    assert loader.load_image(Image.new("L", (40, 40), 7)).getpixel((0, 0)) == (7, 7, 7)
    with raises("images[0]", "must be HxW"):
        loader.load_image(np.zeros((2, 3, 4, 5)), param="images[0]")
    with raises("images[0]", r"in \[0, 1\]"):
        loader.load_image(np.full((40, 40), 2.5), param="images[0]")
    with raises("images[0]", "must be uint8"):
        loader.load_image(np.full((40, 40), -3), param="images[0]")


def test_unknown_objects_are_refused(loader):
    with raises("images[0]", "Cannot read int as an image"):
        loader.load_image(42, param="images[0]")


# --- local files ----------------------------------------------------------------------------------------------------
def test_local_files_are_refused_without_an_allowed_folder(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(image_bytes("PNG"))
    for source in (str(path), path, f"file://{path}"):
        with raises("images[0]", "local files are not allowed here.*--allowed-local-media-path"):
            MediaLoader().load_image(source, param="images[0]")


def test_local_files_outside_the_allowed_folder_are_refused(tmp_path):
    allowed, outside = tmp_path / "media", tmp_path / "secret"
    allowed.mkdir(), outside.mkdir()
    (outside / "cat.png").write_bytes(image_bytes("PNG"))
    (allowed / "link.png").symlink_to(outside / "cat.png")
    (allowed / "dir").mkdir()
    loader = MediaLoader(policy=FetchPolicy(allowed_local_media_path=allowed))
    for source in (str(outside / "cat.png"), str(allowed / ".." / "secret" / "cat.png"), str(allowed / "link.png"),
                   f"file://{outside}/cat.png", f"file://localhost{outside}/cat.png"):
        with raises("images[0]", "is outside the allowed media folder"):
            loader.load_image(source, param="images[0]")
    with raises("images[0]", "does not exist"):
        loader.load_image(str(allowed / "nope.png"), param="images[0]")
    with raises("images[0]", "cannot be opened|not a regular file"):
        loader.load_image(str(allowed / "dir"), param="images[0]")
    with raises("images[0]", "is not a valid file path"):
        loader.load_image(str(allowed / "cat\x00.png"), param="images[0]")
    with raises("images[0]", "names the host 'server'"):
        loader.load_image("file://server/share/cat.png", param="images[0]")


def test_relative_paths_and_the_byte_cap_for_files(tmp_path, monkeypatch):
    (tmp_path / "cat.png").write_bytes(noise_png())
    monkeypatch.chdir(tmp_path)
    assert MediaLoader(policy=FetchPolicy(allowed_local_media_path=tmp_path)).load_image("cat.png").size == (120, 90)
    small = MediaLoader(policy=FetchPolicy(allowed_local_media_path=tmp_path, max_bytes=1000))
    with raises("images[0]", "more than the 1,000 allowed"):
        small.load_image("cat.png", param="images[0]")


def test_other_url_schemes_are_refused(loader):
    for url in ("ftp://example.com/cat.png", "gopher://example.com/", "javascript://x"):
        with raises("images[0]", "which is not allowed"):
            loader.load_image(url, param="images[0]")


# --- video ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total, duration, fps, maxlen, expected", [
    (25, 2.5, 2.0, 128, [0, 6, 12, 18, 24]),  # floor(2.5 * 2) = 5 frames over 25
    (25, 2.5, 100.0, 128, list(range(25))),  # capped by the frame count
    (300, 30.0, 2.0, 8, [0, 42, 85, 128, 170, 213, 256, 299]),  # capped by video_maxlen
    (10, 0.2, 2.0, 128, [0]),  # at least one frame
    (0, 10.0, 2.0, 4, [0, 1, 2, 3]),  # no frame count: LLaMA-Factory takes the first video_maxlen
])
def test_frame_sampling_follows_llamafactory(total, duration, fps, maxlen, expected):
    assert sample_indices(total, duration, fps, maxlen) == expected


@pytest.mark.parametrize("codec, fmt", [("libx264", "mp4"), ("mpeg4", "avi"), ("libvpx-vp9", "webm"),
                                        ("libx264", "matroska")])
def test_videos_are_sampled_at_video_fps(loader, tmp_path, codec, fmt):
    data = video_bytes(codec=codec, fmt=fmt)  # 25 frames at 10 fps: 2.5 s
    path = tmp_path / "clip.video"
    path.write_bytes(data)
    for source in (data, str(path), data_url("video/mp4", data)):
        clip = loader.load_video(source, param="videos[0]")
        assert isinstance(clip, VideoClip)
        assert clip.frame_indices == (0, 6, 12, 18, 24)
        assert [frame_level(frame) for frame in clip.frames] == [0, 6, 12, 18, 24]
        assert clip.duration_s == pytest.approx(2.5, abs=0.11) and clip.source_fps == pytest.approx(10)
        assert clip.fps == pytest.approx(len(clip.frames) / clip.duration_s)
        assert all(frame.mode == "RGB" and frame.size == (64, 48) for frame in clip.frames)


def test_video_maxlen_and_fps_shape_the_sample():
    clip = MediaLoader(MediaOptions(video_fps=4.0, video_maxlen=3)).load_video(video_bytes())
    assert clip.frame_indices == (0, 12, 24) and [frame_level(f) for f in clip.frames] == [0, 12, 24]


def test_video_frames_are_resized_to_the_video_budget():
    clip = MediaLoader().load_video(video_bytes(frames=4, size=(640, 480)))
    assert {frame.size for frame in clip.frames} == {(295, 221)}  # sqrt(65536 / 307200) = 0.4619


def test_a_list_of_frames_is_a_video_taken_as_it_is(loader, tmp_path):
    (tmp_path / "f0.png").write_bytes(image_bytes("PNG", size=(600, 400)))
    frames = [str(tmp_path / "f0.png"), Image.new("RGB", (600, 400), (0, 0, 255)), np.zeros((400, 600, 3), np.uint8)]
    clip = loader.load_video(frames, param="videos[0]")
    assert len(clip.frames) == 3 and clip.frame_indices == (0, 1, 2) and clip.source_fps is None
    assert clip.duration_s == pytest.approx(1.5) and clip.fps == 2.0  # len(frames) / video_fps, as LLaMA-Factory
    assert {frame.size for frame in clip.frames} == {(313, 209)}  # sqrt(65536 / 240000) = 0.52256
    assert loader.load_video(np.zeros((4, 30, 30, 3), np.uint8)).frame_indices == (0, 1, 2, 3)
    with raises("videos[0][1]", "is not an image Pillow can read"):
        loader.load_video([image_bytes("PNG"), b"garbage" * 10], param="videos[0]")
    with raises("videos[0]", "more than video_maxlen"):
        MediaLoader(MediaOptions(video_maxlen=2)).load_video(frames, param="videos[0]")
    with raises("videos[0]", "list of frames is empty"):
        loader.load_video([], param="videos[0]")


def test_broken_and_truncated_videos_are_refused(loader):
    moov_last = video_bytes()
    moov_first = video_bytes(frames=60, noise=40, movflags="faststart")
    with raises("videos[0]", "not a video PyAV can read, or it is truncated"):
        loader.load_video(moov_last[: len(moov_last) // 2], param="videos[0]")
    with raises("videos[0]", "decoding stopped after [1-9][0-9] of the 60 frames it declares"):
        MediaLoader(MediaOptions(video_fps=30)).load_video(moov_first[: len(moov_first) * 2 // 3], param="videos[0]")
    with raises("videos[0]", "not a video PyAV can read"):
        loader.load_video(b"\x00garbage" * 100, param="videos[0]")
    with raises("videos[0]", "has no video stream"):
        loader.load_video(m4a_bytes(), param="videos[0]")  # an MP4 with only sound
    with raises("videos[0]", r"not a video PyAV can read, or it is truncated \(Invalid argument\)"):
        loader.load_video(audio_bytes("WAV"), param="videos[0]")


def test_playlists_cannot_make_ffmpeg_read_other_files(loader, tmp_path, monkeypatch):
    """An ffconcat/HLS "video" names files FFmpeg would open itself, past allowed_local_media_path."""
    (tmp_path / "secret.mp4").write_bytes(video_bytes())
    monkeypatch.chdir(tmp_path)
    playlists = [b"ffconcat version 1.0\nfile 'secret.mp4'\n",
                 b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nsecret.mp4\n#EXT-X-ENDLIST\n"]
    strict = MediaLoader()  # no local files at all
    for playlist in playlists:
        with raises("videos[0]", "not a video PyAV can read"):
            strict.load_video(playlist, param="videos[0]")
        with raises("videos[0]", "not a video PyAV can read"):
            strict.load_video(data_url("video/mp4", playlist), param="videos[0]")
        with raises("audios[0]", "not audio that soundfile or PyAV can read"):
            strict.load_audio(playlist, param="audios[0]")
    assert strict.load_video(video_bytes()).frame_indices == (0, 6, 12, 18, 24)  # plain files still open


def test_only_common_raster_formats_reach_pillow(loader):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), RED).save(buffer, "EPS")  # Pillow would hand it to Ghostscript
    with raises("images[0]", "is not an image Pillow can read"):
        loader.load_image(buffer.getvalue(), param="images[0]")
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), RED).save(buffer, "PCX")
    with raises("images[0]", "is not an image Pillow can read"):
        loader.load_image(buffer.getvalue(), param="images[0]")


def test_video_limits(loader):
    with raises("videos[0]", "lasts 2.5 s, longer than the 2 s allowed"):
        MediaLoader(MediaOptions(video_max_duration_s=2)).load_video(video_bytes(), param="videos[0]")
    with raises("videos[0]", "frames are 64x48 pixels, more than the 1,000 decoded at most"):
        MediaLoader(MediaOptions(max_decoded_pixels=1000)).load_video(video_bytes(), param="videos[0]")


# --- audio ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, lossy", [("WAV", False), ("FLAC", False), ("OGG", True), ("MP3", True)])
def test_audio_files_become_mono_at_the_sampling_rate(loader, tmp_path, fmt, lossy):
    data = audio_bytes(fmt, seconds=1.0)
    (tmp_path / "a.audio").write_bytes(data)
    for source in (data, str(tmp_path / "a.audio"), data_url(f"audio/{fmt.lower()}", data)):
        clip = loader.load_audio(source, param="audios[0]")
        assert clip.sampling_rate == 16000 and clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
        assert len(clip.waveform) == pytest.approx(16000, abs=1 if not lossy else 20)
        assert dominant_frequency(clip.waveform, 16000) == pytest.approx(440, abs=2)
        assert np.abs(clip.waveform[2000:-2000]).max() == pytest.approx(0.25, abs=0.005 if not lossy else 0.03)


def test_formats_libsndfile_cannot_read_go_through_pyav(loader):
    clip = loader.load_audio(m4a_bytes(seconds=1.0), param="audios[0]")
    assert clip.sampling_rate == 16000 and clip.duration_s == pytest.approx(1.0, abs=0.1)
    assert dominant_frequency(clip.waveform, 16000) == pytest.approx(440, abs=2)
    with raises("audios[0]", "has no audio track"):
        loader.load_audio(video_bytes(), param="audios[0]")


def test_resampling_is_accurate():
    clip = MediaLoader().load_audio((sine(1.0, 48000, 1000.0), 48000))
    expected = sine(1.0, 16000, 1000.0)
    assert len(clip.waveform) == 16000
    assert np.abs(clip.waveform[500:-500] - expected[500:-500]).max() < 1e-3


def test_arrays_and_pairs(loader):
    mono = sine(0.5, 16000)
    assert np.array_equal(loader.load_audio(mono).waveform, mono)  # a bare array is taken at audio_sampling_rate
    stereo = np.stack([mono, -mono])
    assert np.abs(loader.load_audio((stereo, 16000)).waveform).max() == 0  # channels x samples: the mean
    assert np.abs(loader.load_audio((stereo.T.copy(), 16000)).waveform).max() == 0  # samples x channels
    pcm = (mono * 32767).astype(np.int16)
    assert np.abs(loader.load_audio((pcm, 16000)).waveform - mono).max() < 1e-4
    assert len(loader.load_audio({"array": sine(1.0, 8000), "sampling_rate": 8000}).waveform) == 16000
    with raises("audios[0]", "needs its 'sampling_rate'"):
        loader.load_audio({"array": mono}, param="audios[0]")
    with raises("audios[0]", "NaN or infinite"):
        loader.load_audio((np.array([0.1, np.nan]), 16000), param="audios[0]")
    with raises("audios[0]", "positive whole number of Hz"):
        loader.load_audio((mono, -5), param="audios[0]")
    with raises("audios[0]", "must be 1-D"):
        loader.load_audio((np.zeros((2, 3, 4)), 16000), param="audios[0]")


def test_broken_and_truncated_audio_is_refused(loader):
    wav, flac, mp3 = audio_bytes("WAV"), audio_bytes("FLAC"), audio_bytes("MP3", seconds=2.0)
    with raises("audios[0]", "its header declares .*: the file is truncated"):
        loader.load_audio(wav[: len(wav) // 2], param="audios[0]")
    with raises("audios[0]", "broken or truncated"):
        loader.load_audio(flac[: len(flac) // 2], param="audios[0]")
    ogg = audio_bytes("OGG", seconds=2.0)
    with raises("audios[0]", "holds no audio samples"):
        loader.load_audio(ogg[: len(ogg) // 2], param="audios[0]")
    with raises("audios[0]", "the file is truncated"):
        loader.load_audio(mp3[: len(mp3) // 2], param="audios[0]")
    with raises("audios[0]", "not audio that soundfile or PyAV can read"):
        loader.load_audio(b"\x01noise" * 200, param="audios[0]")


def test_audio_duration_is_capped_before_decoding():
    loader = MediaLoader(MediaOptions(audio_max_duration_s=0.5))
    for data in (audio_bytes("FLAC"), m4a_bytes()):
        with raises("audios[0]", "longer than the 0.5 s allowed"):
            loader.load_audio(data, param="audios[0]")
    with raises("audios[0]", "longer than the 0.5 s allowed"):
        loader.load_audio((sine(1.0, 16000), 16000), param="audios[0]")


# --- the loader as the facade will call it ----------------------------------------------------------------------
def test_aload_all_loads_everything_in_order_off_the_event_loop(loader):
    png, blue = image_bytes("PNG"), image_bytes("PNG", color=(0, 0, 255))
    media = asyncio.run(loader.aload_all(images=[png, blue], videos=[video_bytes()], audios=[(sine(0.5), 44100)]))
    assert [image.getpixel((0, 0)) for image in media.images] == [RED, (0, 0, 255)]
    assert len(media.videos) == 1 and media.videos[0].frame_indices == (0, 6, 12, 18, 24)
    assert len(media.audios) == 1 and media.audios[0].duration_s == pytest.approx(0.5)


def test_aload_all_names_the_failing_item(loader):
    with raises("images[1]", "not an image"):
        asyncio.run(loader.aload_all(images=[image_bytes("PNG"), b"junk" * 20], audios=[(sine(0.1), 16000)]))
    with raises("audios[0]", "not audio"):
        asyncio.run(loader.aload_all(audios=[b"junk" * 20]))


def test_load_by_kind(loader):
    assert loader.load("image", image_bytes("PNG")).size == (40, 30)
    with pytest.raises(ValueError, match="unknown media kind"):
        loader.load("hologram", b"x")


def test_importing_the_package_imports_no_decoder():
    code = ("import sys, lmchat.media; heavy = [m for m in ('PIL', 'av', 'soundfile', 'numpy', 'httpcore', 'torch') "
            "if m in sys.modules]; print(heavy)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
