"""The apps' console: TensorFlow's environment set before it loads, a quiet log by default,
and one line (never a traceback) for a tfprune error or Ctrl-C.

An app calls `prepare_environment()` before anything imports TensorFlow or Keras (the
`pipelines` package and `android_export`'s entry point do it first thing) and decorates its
main with `app_main`. Importing tfprune itself changes nothing.

Quiet: TensorFlow's C++ log shows fatal messages only where no NVIDIA driver exists (the
failed CUDA probe is an error-level line there) and errors elsewhere; Python-side TF/absl INFO
(`Assets written to ...`, signature serialisation, converter notes) shows only with
`--verbosity=0` or higher (absl's flag, default -1: warnings and errors).
"""
from __future__ import annotations

import os
import sys
from typing import Callable


def prepare_environment() -> None:
    """Set TensorFlow's logging level and the Keras backend unless the user chose them."""
    cpu_only = not os.path.exists("/proc/driver/nvidia")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if cpu_only else "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def quiet_logs() -> None:
    """Hide TF/absl INFO unless --verbosity asked for it (call after absl parsed the flags)."""
    import logging

    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()  # absl: -1 WARNING, 0 INFO, >0 DEBUG
    python_level = logging.WARNING if level < 0 else logging.INFO if level == 0 else logging.DEBUG
    for name in ("tensorflow", "absl", "keras", "h5py", "jax"):
        logging.getLogger(name).setLevel(python_level)
    if level < 0:
        absl_logging.set_verbosity(absl_logging.WARNING)


def app_main(name: str, resume_hint: Callable[[], str] | None = None):
    """Decorate an absl app's `main(argv)`: a quiet console, a TfpruneError as one line
    `name: message` (exit status 1), Ctrl-C as one line saying how to resume (status 130)."""
    import functools

    from tfprune.errors import TfpruneError

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapped(argv):
            quiet_logs()
            try:
                return main(argv)
            except TfpruneError as err:
                sys.exit(f"{name}: {err}")
            except KeyboardInterrupt:
                hint = resume_hint() if resume_hint else "nothing was left half-written"
                print(f"{name}: interrupted; {hint}", file=sys.stderr)
                sys.exit(130)
        return wrapped
    return decorate
