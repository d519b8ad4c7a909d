"""Shared by the entry-point scripts: user mistakes end in one clear line on stderr, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from diffqe.export.trt_build import TrtUnavailable
from diffqe.model.checkpoint import CheckpointError
from diffqe.plugin.backends import BackendUnavailable
from diffqe.train.codec import CodecError
from diffqe.train.corpus import CorpusError

USER_ERRORS = (BackendUnavailable, CheckpointError, CodecError, CorpusError, FileNotFoundError, NotADirectoryError,
               TrtUnavailable, ValueError)


def run(main: Callable[[], int | None]) -> None:
    try:
        code = main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
