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

__version__ = "0.1.0"

_EXPORTS = {
    "anonymize": "faceveil.api", "recover": "faceveil.api", "Result": "faceveil.api",
    "EngineSettings": "faceveil.engine",
    "FaceveilError": "faceveil.errors", "HeaderError": "faceveil.errors", "NoFaceError": "faceveil.errors",
    "UsageError": "faceveil.errors", "WrongKeyError": "faceveil.errors",
    "Key": "faceveil.keys", "generate_key": "faceveil.keys",
    "PRESETS": "faceveil.models", "DiffusionModel": "faceveil.models", "load_model": "faceveil.models",
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
