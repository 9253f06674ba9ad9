"""The errors a collective raises instead of hanging or returning wrong data.

InputError: this rank's own arguments are unfit (raised before any data moves). Its short
`reason` is what the peers are told through the metadata check, so they fail too rather
than wait for a rank that will never arrive.
MismatchError: ranks called the same collective with different lengths, dtypes, ops,
algorithms or roots; every rank raises the same message naming ranks and values.
PeerTimeout (from the transport): a peer did not show up in time.
"""
from __future__ import annotations

from .transport.base import PeerTimeout

REASONS = ("bad input", "non-contiguous buffer", "read-only buffer", "unsupported dtype",
           "unsupported buffer type", "tensor on a GPU", "unknown op", "unknown algorithm",
           "op invalid for dtype", "root out of range", "non-native byte order",
           "root not an integer", "no op given", "bad segment size")


class InputError(Exception):
    reason = "bad input"


class InputTypeError(InputError, TypeError):
    pass


class InputValueError(InputError, ValueError):
    pass


class MismatchError(ValueError):
    pass


def reject(cls: type, reason: str, detail: str) -> InputError:
    assert reason in REASONS, reason
    err = cls(f"ringps: {detail}")
    err.reason = reason
    return err


__all__ = ["REASONS", "InputError", "InputTypeError", "InputValueError", "MismatchError",
           "PeerTimeout", "reject"]
