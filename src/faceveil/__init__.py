"""faceveil: secure, key-reversible face anonymization with diffusion models.

    import faceveil
    key = faceveil.generate_key()
    key.save("secret.key")
    faceveil.anonymize("photo.jpg", key)             # writes photo.veiled.png
    faceveil.recover("photo.veiled.png", key)        # writes photo.recovered.png

Names are imported on first use, so ``import faceveil.train`` (on a training machine)
needs neither the crypto nor the face-detection stack.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.2.0"


def _quiet_native_logs() -> None:
    """Ask native libraries that log through glog or TensorFlow's logger for errors only.

    Set at ``import faceveil``, before mediapipe or TFLite can be imported, and only
    where the user has not chosen a level (``setdefault``). MediaPipe 0.10.21's absl
    lines (``W0000 ... Feedback manager``) ignore these variables; ``faces.detect``
    silences them around the graph's start-up.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def quiet_diffusers() -> None:
    """Set the ``diffusers`` library logger to errors only (its ``accelerate`` hint on every load).

    Called by ``faceveil.models`` when it imports diffusers, so the API and the CLI both
    get it; no other logger is touched. ``DIFFUSERS_VERBOSITY`` in the environment, the
    library's own switch, wins.
    """
    if os.environ.get("DIFFUSERS_VERBOSITY"):
        return
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:  # pragma: no cover
        return
    diffusers_logging.set_verbosity_error()


_quiet_native_logs()

_EXPORTS = {
    "anonymize": "faceveil.api", "recover": "faceveil.api", "disclose": "faceveil.api", "Result": "faceveil.api",
    "Recipient": "faceveil.envelope", "DisclosureToken": "faceveil.envelope",
    "EngineSettings": "faceveil.engine",
    "FaceveilError": "faceveil.errors", "HeaderError": "faceveil.errors", "NoFaceError": "faceveil.errors",
    "UsageError": "faceveil.errors", "WrongKeyError": "faceveil.errors",
    "Key": "faceveil.keys", "Identity": "faceveil.keys", "generate_key": "faceveil.keys",
    "PRESETS": "faceveil.models", "DiffusionModel": "faceveil.models", "load_model": "faceveil.models",
    "default_model": "faceveil.models",
    "Settings": "faceveil.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'faceveil' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
