"""VapourSynth filter and inference backends.

    from diffqe.plugin import Backend, enhance
    clip = enhance(clip, backend=Backend.ORT_CPU(), tile=512)
"""

from .backends import Backend
from .filter import enhance

__all__ = ["Backend", "enhance"]
