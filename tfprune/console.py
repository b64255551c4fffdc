"""The apps' console: TensorFlow's environment set before it loads, a quiet log by default,
and one line (never a traceback) for a tfprune error or Ctrl-C.

An app calls `prepare_environment()` before anything imports TensorFlow or Keras (the
`pipelines` package and `android_export`'s entry point do it first thing) and decorates its
main with `app_main`. Importing tfprune itself changes nothing.

Quiet: TensorFlow's C++ log shows fatal messages only where no NVIDIA driver exists (the
failed CUDA probe is an error-level line there) and errors elsewhere; Python-side TF/absl INFO
(`Assets written to ...`, signature serialisation, converter notes) shows only with
`--verbosity=0` or higher (absl's flag, default -1: warnings and errors, less TF's warning
that a tf.function was traced again).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from typing import Callable


def prepare_environment() -> None:
    """Set TensorFlow's logging level and the Keras backend unless the user chose them, then
    load TensorFlow with the INFO lines its C++ side prints before its log is set up held
    back (TF 2.21: the oneDNN notice and the CUDA probe, whatever TF_CPP_MIN_LOG_LEVEL
    says); anything else printed meanwhile is passed on. TF_CPP_MIN_LOG_LEVEL=0 shows all."""
    cpu_only = not os.path.exists("/proc/driver/nvidia")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if cpu_only else "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        try:
            with _native_stderr_held() as held:
                importlib.import_module("tensorflow")
        finally:  # a failed import keeps what it printed
            sys.stderr.write("".join(ln for ln in held().splitlines(True)
                                     if not _PRE_LOG_INFO.match(ln)))


_PRE_LOG_INFO = re.compile(r"I\d{4} |WARNING: All log messages before absl::InitializeLog")


@contextlib.contextmanager
def _native_stderr_held():
    """Send file descriptor 2 to a temporary file while the block runs; yields a function
    that returns what was written (call it after the block)."""
    sys.stderr.flush()
    saved, text = os.dup(2), []
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield lambda: "".join(text)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text.append(held.read().decode(errors="replace"))


def quiet_logs() -> None:
    """Hide TF/absl INFO unless --verbosity asked for it (call after absl parsed the flags;
    absl itself logs INFO under app.run whatever the flag's default says)."""
    import logging

    from absl import flags
    from absl import logging as absl_logging

    flag = flags.FLAGS["verbosity"]
    level = flag.value if flag.present else -1  # absl: -1 WARNING, 0 INFO, >0 DEBUG
    python_level = logging.WARNING if level < 0 else logging.INFO if level == 0 else logging.DEBUG
    absl_logging.set_verbosity(level)
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(python_level)
    if level < 0:  # every pruned candidate is a new model, traced anew: not a user's concern
        logging.getLogger("tensorflow").addFilter(
            lambda record: "triggered tf.function retracing" not in record.getMessage())


@contextlib.contextmanager
def native_stderr_hidden():
    """Hold back what native code (the TFLite converter's `fully_quantize: ...` lines) writes to
    file descriptor 2 while the block runs; it is replayed when --verbosity asks for INFO or
    when the block raises, so nothing needed to understand a failure is lost."""
    from absl import logging as absl_logging

    failed = True
    try:
        with _native_stderr_held() as held:
            yield
            failed = False
    finally:
        if failed or absl_logging.get_verbosity() >= 0:
            sys.stderr.write(held())


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
