"""Gradient compression: codecs that put fewer bytes on the wire, and error feedback.

A codec turns `count` float32 values into one payload of `nbytes(count)` bytes (uint8) and
back. The payload size depends on `count` alone, so peers know every payload's size without
asking. Codecs, by name (`parse("topk:0.01+ef")`):

    name              payload, in order                               bytes for count c     decoded value
    fp16              halves: float16 x c                             2c                    x rounded to float16 (saturated at +-65504)
    bf16              bfloat16 bits: uint16 x c                       2c                    x rounded to bfloat16 (nearest even)
    int8              scales: float32 x s, levels: int8 x c           4s + c                level * scale of its segment
    onebit            scales: float32 x s, signs: bits, ceil(c/8)     4s + ceil(c/8)        +-scale of its segment (sign of x)
    topk:<f>          indices: uint32 x k, values: float32 x k        8k                    x at the k largest |x|, 0 elsewhere
    randomk:<f>       indices: uint32 x k, values: float32 x k        8k                    x at k uniformly drawn places, 0 elsewhere

    s = ceil(c / SEGMENT) segments of SEGMENT elements; k = ceil(f * c) (at least 1 when c > 0).
    int8 scale = max |x| / 127 over the segment; onebit scale = mean |x| over the segment (so
    the decoded segment keeps the L1 norm).

`+ef` wraps any codec in ErrorFeedback (BytePS, 1-bit SGD): what a rank failed to send is
kept per tensor and added to that tensor's next gradient, so over steps nothing is lost:

    sum of what was sent (decoded) + residual == sum of the gradients

Dense codecs (fp16, bf16, int8, onebit) are summed by decoding, adding and encoding again at
every hop of a strategy; sparse ones (topk, randomk) by gathering every rank's (index, value)
pairs and adding them once (collectives/compressed.py). Every encode a rank does is an
`Encoding.encode`, which adds that encode's error to the rank's residual, so with `+ef` the
extra error of re-encoding partial sums is fed back too.

Values are encoded from float32 (float16, bfloat16 and float64 buffers are converted), so a
compressed allreduce computes in float32. Integer buffers are refused: there is nothing to
round away.
"""
from __future__ import annotations

import math

import numpy as np

from .dtypes import DTYPES
from .errors import InputTypeError, InputValueError, reject

SEGMENT = 256             # elements per int8 / onebit scale
MAX_SPARSE_COUNT = 2 ** 32  # indices travel as uint32
FEEDBACK_SUFFIX = "+ef"


class Codec:
    """One way to encode float32 values into bytes. `sparse` codecs are summed by gathering
    their payloads; dense ones by decode-add-encode per hop."""
    name = ""
    sparse = False

    def nbytes(self, count: int) -> int:
        raise NotImplementedError

    def encode(self, values: np.ndarray) -> np.ndarray:
        """float32 values -> uint8 payload of nbytes(len(values))."""
        raise NotImplementedError

    def decode(self, payload: np.ndarray, count: int) -> np.ndarray:
        """payload -> float32 values (a new array of `count`)."""
        raise NotImplementedError

    def decode_add(self, payload: np.ndarray, total: np.ndarray) -> None:
        """total += decode(payload): sparse codecs add only their k pairs."""
        total += self.decode(payload, len(total))

    def ratio(self, count: int, itemsize: int = 4) -> float:
        """Bytes on the wire over uncompressed bytes."""
        return self.nbytes(count) / (count * itemsize) if count else 0.0

    def __repr__(self) -> str:
        return self.name


class Fp16(Codec):
    name = "fp16"
    LIMIT = float(np.finfo(np.float16).max)

    def nbytes(self, count):
        return 2 * count

    def encode(self, values):
        return np.clip(values, -self.LIMIT, self.LIMIT).astype(np.float16).view(np.uint8)

    def decode(self, payload, count):
        return payload.view(np.float16).astype(np.float32)


class Bf16(Codec):
    name = "bf16"

    def nbytes(self, count):
        return 2 * count

    def encode(self, values):
        bits = np.empty(len(values), np.uint16)
        DTYPES["bfloat16"].from_compute(values.astype(np.float32, copy=False), bits)
        return bits.view(np.uint8)

    def decode(self, payload, count):
        return DTYPES["bfloat16"].to_compute(payload.view(np.uint16))


def _segments(count: int) -> int:
    return -(-count // SEGMENT)


def _by_segment(values: np.ndarray) -> np.ndarray:
    """values padded with zeros to whole segments, one row per segment."""
    padded = np.zeros(_segments(len(values)) * SEGMENT, np.float32)
    padded[:len(values)] = values
    return padded.reshape(-1, SEGMENT)


class Int8(Codec):
    """Per-segment scale max|x|/127, round to nearest: error <= scale/2 per element."""
    name = "int8"

    def nbytes(self, count):
        return 4 * _segments(count) + count

    def encode(self, values):
        count = len(values)
        rows = _by_segment(values)
        scales = (np.abs(rows).max(axis=1) / 127).astype(np.float32)
        safe = np.where(scales > 0, scales, 1).astype(np.float32)
        levels = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
        return np.concatenate([scales.view(np.uint8), levels.reshape(-1)[:count].view(np.uint8)])

    def decode(self, payload, count):
        s = _segments(count)
        scales = payload[:4 * s].view(np.float32)
        levels = payload[4 * s:].view(np.int8).astype(np.float32)
        return levels * np.repeat(scales, SEGMENT)[:count]


class OneBit(Codec):
    """Sign per element, per-segment scale mean|x| (1-bit SGD with a scale, signSGD's
    magnitude kept): the decoded segment has the same L1 norm as the input."""
    name = "onebit"

    def nbytes(self, count):
        return 4 * _segments(count) + -(-count // 8)

    def encode(self, values):
        count = len(values)
        rows = _by_segment(values)
        lengths = np.minimum(SEGMENT, count - SEGMENT * np.arange(len(rows)))
        scales = (np.abs(rows).sum(axis=1) / np.maximum(lengths, 1)).astype(np.float32)
        signs = np.packbits(np.asarray(values) < 0)
        return np.concatenate([scales.view(np.uint8), signs])

    def decode(self, payload, count):
        s = _segments(count)
        scales = np.repeat(payload[:4 * s].view(np.float32), SEGMENT)[:count]
        negative = np.unpackbits(payload[4 * s:], count=count).astype(bool)
        return np.where(negative, -scales, scales).astype(np.float32)


class _Sparse(Codec):
    """(index, value) pairs; subclasses choose which k indices."""
    sparse = True

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.name = f"{self.kind}:{fraction:g}"

    def k(self, count: int) -> int:
        return min(count, max(1, math.ceil(self.fraction * count))) if count else 0

    def nbytes(self, count):
        return 8 * self.k(count)

    def choose(self, values: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def encode(self, values):
        k = self.k(len(values))
        if len(values) > MAX_SPARSE_COUNT:
            raise ValueError(f"{self.name}: {len(values)} elements do not fit uint32 indices")
        indices = np.sort(self.choose(values, k)).astype(np.uint32)
        chosen = np.asarray(values, dtype=np.float32)[indices]
        return np.concatenate([indices.view(np.uint8), chosen.view(np.uint8)])

    def pairs(self, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(payload) // 8
        return payload[:4 * k].view(np.uint32), payload[4 * k:].view(np.float32)

    def decode(self, payload, count):
        out = np.zeros(count, np.float32)
        self.decode_add(payload, out)
        return out

    def decode_add(self, payload, total):
        indices, values = self.pairs(payload)
        total[indices] += values          # indices are distinct within one payload


class TopK(_Sparse):
    kind = "topk"

    def choose(self, values, k):
        if k >= len(values):
            return np.arange(len(values))
        return np.argpartition(np.abs(values), len(values) - k)[len(values) - k:]


class RandomK(_Sparse):
    """k places drawn uniformly without replacement, values sent as they are (not rescaled by
    c/k: meant to be used with +ef, which carries the rest to later steps)."""
    kind = "randomk"

    def __init__(self, fraction: float, seed: int = 0):
        super().__init__(fraction)
        self.rng = np.random.default_rng(seed)

    def choose(self, values, k):
        return self.rng.choice(len(values), size=k, replace=False)


CODECS = {"fp16": Fp16, "bf16": Bf16, "int8": Int8, "onebit": OneBit, "topk": TopK,
          "randomk": RandomK}
NEEDS_FRACTION = ("topk", "randomk")


# ---- error feedback ------------------------------------------------------------------------

class Encoding:
    """One compressed call on one rank: `values` are what this rank contributes (its gradient
    plus, with error feedback, the residual it kept); `encode(v, start)` encodes values that
    sit at [start, start+len(v)) of the tensor and, with feedback, adds the encode's error to
    the residual there."""

    def __init__(self, codec: Codec, values: np.ndarray, residual: np.ndarray | None):
        self.codec, self.values, self.residual = codec, values, residual

    def encode(self, v: np.ndarray, start: int = 0) -> np.ndarray:
        payload = self.codec.encode(v)
        if self.residual is not None:
            self.residual[start:start + len(v)] += v - self.codec.decode(payload, len(v))
        return payload


class Compressor:
    """A codec as a strategy uses it, without memory between calls."""
    feedback = False

    def __init__(self, codec: Codec):
        self.codec = codec
        self.spec = codec.name

    def begin(self, values: np.ndarray, key=None) -> Encoding:
        """values: this call's float32 gradient (it may be modified)."""
        return Encoding(self.codec, values, None)

    def end(self, encoding: Encoding, key=None) -> None:
        pass

    def __repr__(self) -> str:
        return self.spec


class ErrorFeedback(Compressor):
    """Wraps any codec: the residual of each tensor (by key) is added to its next gradient
    and replaced by the error of this call's encodes (BytePS's error-feedback compressor)."""
    feedback = True

    def __init__(self, codec: Codec):
        super().__init__(codec)
        self.spec = codec.name + FEEDBACK_SUFFIX
        self.residuals: dict = {}

    def begin(self, values, key=None):
        kept = self.residuals.get(key)
        if kept is not None and len(kept) == len(values):
            values += kept
        return Encoding(self.codec, values, np.zeros(len(values), np.float32))

    def end(self, encoding, key=None):
        self.residuals[key] = encoding.residual

    def residual(self, key=None) -> np.ndarray | None:
        return self.residuals.get(key)


def parse(spec) -> Compressor:
    """"int8", "topk:0.01", "randomk:0.05+ef", or a Compressor (returned as it is)."""
    if isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, str) or not spec:
        raise reject(InputValueError, "bad input", f"compression must be a codec name such as "
                     f"'topk:0.01+ef', got {spec!r}")
    feedback = spec.endswith(FEEDBACK_SUFFIX)
    body = spec[:-len(FEEDBACK_SUFFIX)] if feedback else spec
    name, _, argument = body.partition(":")
    if name not in CODECS:
        raise reject(InputValueError, "bad input", f"unknown compression {spec!r} (known: "
                     f"{', '.join(n + ':<fraction>' if n in NEEDS_FRACTION else n for n in CODECS)}"
                     f", each with optional {FEEDBACK_SUFFIX})")
    if name in NEEDS_FRACTION:
        codec = CODECS[name](_fraction(spec, argument))
    elif argument:
        raise reject(InputValueError, "bad input", f"compression {spec!r}: {name} takes no "
                     f"argument")
    else:
        codec = CODECS[name]()
    return (ErrorFeedback if feedback else Compressor)(codec)


def _fraction(spec: str, text: str) -> float:
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1:
        raise reject(InputValueError, "bad input", f"compression {spec!r}: the fraction must be "
                     f"a number in (0, 1], got {text!r}")
    return fraction


_shared: dict[str, Compressor] = {}


def compressor(spec) -> Compressor:
    """The job-wide Compressor for a spec string (so `+ef` residuals persist from call to
    call), or `spec` itself when it is a Compressor."""
    if isinstance(spec, Compressor):
        return spec
    if spec not in _shared:
        _shared[spec] = parse(spec)
    return _shared[spec]


def check_dtype(dtype_name: str) -> None:
    if not DTYPES[dtype_name].is_float:
        raise reject(InputTypeError, "op invalid for dtype", f"compression needs a floating-point "
                     f"buffer, got {dtype_name} (integers have nothing to round away)")
