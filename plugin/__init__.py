"""VapourSynth filter and inference backends.

    from diffqe.plugin import Backend, enhance
    clip = enhance(clip, backend=Backend.ORT_CPU(), tile=512)

``enhance`` is imported on first use, so that the backends work where VapourSynth is not installed
(training and benchmark machines).
"""

from .backends import Backend

__all__ = ["Backend", "enhance"]


def __getattr__(name: str):
    if name == "enhance":
        from .filter import enhance

        return enhance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
