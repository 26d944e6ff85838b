"""A short demo clip built from real photos in ``../shared`` (tests, the benchmark and the README).

Person A (CelebA 000176) moves right and grows across the clip; person B (CelebA 000306)
slides in from the right edge halfway through and stays. A 440 Hz tone is the audio
track, so audio passthrough can be checked. The frames are H.264 in MP4, as a phone
would record them; what faceveil decodes from it is the "original" that recovery
restores bit for bit.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

PERSON_A, PERSON_B = "000176", "000306"
RATE = 12


def _photo(shared: Path, name: str):
    from PIL import Image

    image = Image.open(Path(shared) / "data" / "celeba" / "images" / f"{name}.jpg").convert("RGB")
    return image.crop((0, 20, 178, 198))  # the square around the face (CelebA is 178 x 218, face centred)


def demo_frames(shared: Path, frames: int = 16, size: int = 256) -> list[np.ndarray]:
    """The clip's RGB frames: A moves and grows, B enters at ``frames // 2``."""
    from PIL import Image

    a, b = _photo(shared, PERSON_A), _photo(shared, PERSON_B)
    rng = np.random.default_rng(13)
    out = []
    scale = size / 256
    for i in range(frames):
        t = i / max(1, frames - 1)
        canvas = Image.new("RGB", (size, size), (118, 124, 131))
        side = int(round((112 + 32 * t) * scale))
        canvas.paste(a.resize((side, side), Image.LANCZOS), (int(round((8 + 28 * t) * scale)), int(round((30 + 10 * t) * scale))))
        enter = frames // 2
        if i >= enter:
            side_b = int(round(100 * scale))
            x = int(round(max(150.0, 250.0 - 40.0 * (i - enter)) * scale))
            canvas.paste(b.resize((side_b, side_b), Image.LANCZOS), (x, int(round(120 * scale))))
        noise = rng.normal(0.0, 1.5, (size, size, 3))
        out.append(np.clip(np.rint(np.asarray(canvas, dtype=np.float64) + noise), 0, 255).astype(np.uint8))
    return out


def write_demo_clip(path: Path, shared: Path, frames: int = 16, size: int = 256) -> Path:
    """Write the demo clip as H.264 + AAC in MP4 (or whatever ``path``'s suffix says PyAV writes)."""
    import av

    rgb = demo_frames(shared, frames, size)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=RATE, options={"crf": "16"})
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        for i, pixels in enumerate(rgb):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, RATE)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        seconds = Fraction(frames, RATE)
        n = int(16000 * seconds)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
        stereo = np.stack([tone, tone])
        for k in range(0, n, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, k:k + 1024]), format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts = 16000, k
            for packet in audio.encode(chunk):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return Path(path)
