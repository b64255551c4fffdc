"""The one error type of tfprune's user-facing failures.

Every error that reports a bad input, a refused request or a failed run (a bad flag value,
file, data source, plan, model, a training run that diverged) derives from `TfpruneError`,
whose message is one line naming what is wrong. An app catches them all with one
`except TfpruneError`. It is a ValueError, so code that caught ValueError keeps working.
"""


class TfpruneError(ValueError):
    """A user-facing tfprune error; the message names the flag, file or value at fault."""


class TrainingDiverged(TfpruneError):
    """Training produced a non-finite loss; nothing from the diverged steps was written."""
