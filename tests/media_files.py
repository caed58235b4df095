"""Real media files for the wiring tests (facade, engines, server, CLI, web UI, batch), made with Pillow, PyAV and
soundfile: distinct images (a colour and a size each), a short MP4 whose frame i is grey level 10*i, a sine WAV."""

from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path

LLAMAFACTORY_DEMO = ("datasets", "llamafactory")  # under ../shared/oracles: mllm_demo.json + mllm_demo_data/


def png_bytes(size=(40, 30), color=(200, 30, 40), noise: bool = False) -> bytes:
    from PIL import Image

    image = Image.effect_noise(size, 80).convert("RGB") if noise else Image.new("RGB", size, color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def pattern_image(size=(56, 56), seed: int = 0):
    """An RGB image with structure (a model's vision tower sees different patches): seeded noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def mp4_bytes(frames: int = 8, fps: int = 4, size=(64, 48)) -> bytes:
    """Frame i is a flat grey of level 10*i (plus a seeded pattern when ``size`` allows), H.264 in MP4."""
    import av
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        rng = np.random.default_rng(1)
        with av.open(path, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for i in range(frames):
                pixels = np.full((size[1], size[0], 3), min(10 * i, 250), np.uint8)
                pixels[::4, ::4] = rng.integers(0, 256, pixels[::4, ::4].shape, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return Path(path).read_bytes()


def wav_bytes(seconds: float = 1.0, rate: int = 44100, freq: float = 440.0) -> bytes:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path
