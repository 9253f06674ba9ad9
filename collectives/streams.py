"""Streams for device collectives: the work runs on a dedicated stream of the buffer's
device, which first waits for the caller's current stream (torch's for a torch tensor,
CuPy's otherwise), so everything the caller queued before the call is in the buffer. The
call returns once the dedicated stream has finished, so the result is there for whatever
the caller queues next, on any stream."""
from __future__ import annotations

from contextlib import contextmanager

_ours: dict[int, object] = {}


def _caller_stream(original):
    import cupy
    if type(original).__module__.startswith("torch"):
        import torch
        return cupy.cuda.ExternalStream(torch.cuda.current_stream(original.device).cuda_stream,
                                        device_id=original.device.index)
    return cupy.cuda.get_current_stream()


@contextmanager
def dedicated(buffer):
    import cupy
    with cupy.cuda.Device(buffer.array.device.id) as device:
        stream = _ours.get(device.id)
        if stream is None:
            stream = _ours[device.id] = cupy.cuda.Stream(non_blocking=True)
        stream.wait_event(_caller_stream(buffer.original).record())
        try:
            with stream:
                yield stream
        finally:                        # even on error: nothing of ours may touch the buffer
            stream.synchronize()        # after the call has returned
