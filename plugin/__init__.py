"""VapourSynth filter and inference backends.

    from diffqe.plugin import Backend, enhance, source
    clip = enhance(source("IN.mkv"), backend=Backend.ORT_CPU(), tile=512)

``source`` decodes a file as enhance.vpy does, with each frame's coded QP for enhance's source-QP guard.
``enhance`` and ``source`` are imported on first use, so that the backends work where VapourSynth is not installed
(training and benchmark machines).
"""

from .backends import Backend

__all__ = ["Backend", "enhance", "source"]


def __getattr__(name: str):
    if name == "enhance":
        from .filter import enhance

        return enhance
    if name == "source":
        from .script import source

        return source
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
