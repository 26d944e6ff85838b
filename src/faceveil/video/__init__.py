"""Videos: ``anonymize_video`` and ``recover_video`` (PyAV in and out, face tracks, resumable chunks).

``io`` reads and writes videos (FFV1 or H.264, audio copied), ``track`` links faces
across frames, ``header`` is the sidecar with one sealed record per frame, ``veil`` runs
the pipeline frame by frame in resumable chunks.
"""

from faceveil.video.veil import (
    CHUNK_FRAMES,
    VideoResult,
    anonymize_video,
    recover_video,
    video_output,
)

__all__ = ["CHUNK_FRAMES", "VideoResult", "anonymize_video", "recover_video", "video_output"]
