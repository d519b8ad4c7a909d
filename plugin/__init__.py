"""VapourSynth filter and inference backends (not built yet)."""
