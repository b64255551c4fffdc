"""The one error type of tfprune's user-facing failures.

Every error that reports a bad input, a refused request or a failed run (a bad flag value,
file, data source, plan, model, a training run that diverged) derives from `TfpruneError`,
whose message is one line naming what is wrong. An app catches them all with one
`except TfpruneError`. It is a ValueError, so code that caught ValueError keeps working.
"""


class TfpruneError(ValueError):
    """A user-facing tfprune error; the message names the flag, file or value at fault."""


class TrainingDiverged(TfpruneError):
    """Training diverged (`LossWatch`); nothing from the diverged steps was written."""


class LossWatch:
    """The one rule for divergence, for Keras and on-device training alike: a loss that is
    NaN, infinite or BLOWUP times the run's first finite loss (at least 1). A rate that throws
    the weights to 1e30 can keep the loss finite for a while, and no recipe recovers from
    there."""

    BLOWUP = 1e4

    def __init__(self):
        self.first = None

    def diverged(self, loss: float) -> bool:
        import math

        if self.first is None and math.isfinite(loss):
            self.first = max(abs(loss), 1.0)
        return not math.isfinite(loss) or loss > self.BLOWUP * (self.first or 1.0)
