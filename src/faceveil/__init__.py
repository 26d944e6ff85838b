"""faceveil: secure, key-reversible face anonymization with diffusion models.

    import faceveil
    key = faceveil.generate_key()
    key.save("secret.key")
    faceveil.anonymize("face.png", key)                 # writes face.veiled.png
    faceveil.recover("face.veiled.png", key)            # writes face.recovered.png
"""

from faceveil.api import Result, anonymize, recover
from faceveil.engine import EngineSettings
from faceveil.errors import FaceveilError, HeaderError, NoFaceError, UsageError, WrongKeyError
from faceveil.keys import Key, generate_key
from faceveil.models import PRESETS, DiffusionModel, load_model
from faceveil.pipeline import Settings

__version__ = "0.1.0"

__all__ = [
    "DiffusionModel", "EngineSettings", "FaceveilError", "HeaderError", "Key", "NoFaceError", "PRESETS",
    "Result", "Settings", "UsageError", "WrongKeyError", "anonymize", "generate_key", "load_model", "recover",
]
