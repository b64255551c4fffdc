"""The paper's learning-rate schedule strings, `EPOCH:LR,...` (LR -1 = the previous LR times
`gamma`), parsed without TensorFlow: `tfprune.training.fit` turns them into Keras schedules, the
simulated device (tfprune.ondevice.finetune) reads the rate of an epoch."""
from __future__ import annotations

from tfprune.errors import TfpruneError


def schedule_points(spec: str, gamma: float = 0.1) -> list[tuple[int, float]]:
    """[(first epoch, lr)] in increasing epochs, starting at 0; TfpruneError naming the item."""
    points = []
    for item in str(spec).split(","):
        epoch, _, value = item.partition(":")
        try:
            epoch, value = int(epoch), float(value)
        except ValueError:
            raise TfpruneError(f"schedule {spec!r}: {item!r} is not EPOCH:LR") from None
        if value == -1:
            if not points:
                raise TfpruneError(f"schedule {spec!r} starts with -1: no learning rate to scale")
            value = points[-1][1] * gamma
        points.append((epoch, value))
    if points[0][0] != 0 or any(a[0] >= b[0] for a, b in zip(points, points[1:])):
        raise TfpruneError(f"schedule {spec!r}: epochs must start at 0 and increase")
    return points


def lr_at_epoch(points: list[tuple[int, float]], epoch: int) -> float:
    return float([lr for start, lr in points if start <= epoch][-1])
