import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def read_scalars():
    return _read_scalars


def _read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """The (step, value) points of every scalar tag in the TensorBoard event files below ``folder``."""
    import struct
    from pathlib import Path

    from tensorboardX.proto import event_pb2

    points: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).rglob("events.out.tfevents*")):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                points.setdefault(value.tag, []).append((event.step, value.simple_value))
    return points
