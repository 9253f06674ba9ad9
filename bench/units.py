"""Sizes and rates the way nccl-tests and OSU print them: sizes with K/M/G suffixes
(powers of 1024, like nccl-tests' -b/-e; KiB/MiB/GiB say the same), KB/MB/GB in powers of
1000 (d2l's "160 MB" is 160e6 bytes), bandwidths in GB/s with GB = 1e9; node-count ranges
("1-4096": the powers of two between, and the ends)."""
from __future__ import annotations

import re

SUFFIXES = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30,
            "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30,
            "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG](?:I?B)?|B?)\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot read size {text!r} (examples: 1024, 4K, 16M, 1G, 160MB)")
    return int(float(match.group(1)) * SUFFIXES[match.group(2).upper()])


def format_size(nbytes: int) -> str:
    for suffix in ("G", "GB", "M", "MB", "K", "KB"):
        unit = SUFFIXES[suffix]
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def size_range(begin: int, end: int, factor: int) -> list[int]:
    """begin, begin*factor, ... up to end (inclusive), like nccl-tests -b -e -f."""
    if begin <= 0 or end <= 0:
        raise ValueError("sizes must be positive")
    if begin > end:
        raise ValueError(f"size range reversed: -b {format_size(begin)} > -e {format_size(end)}")
    if factor < 2:
        raise ValueError(f"-f must be >= 2, got {factor}")
    sizes, size = [], begin
    while size <= end:
        sizes.append(size)
        size *= factor
    return sizes


def gbps(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def parse_counts(text: str, most: int) -> list[int]:
    """Counts from "1-4096" (the powers of two in the range, and both ends), "12", or a
    comma-separated list of either, sorted; each from 1 to `most`."""
    counts = set()
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"cannot read {part.strip()!r} (examples: 1-4096, 16, 1,3,17)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if low < 1 or high > most:
            raise ValueError(f"{part.strip()!r}: counts go from 1 to {most}")
        if low > high:
            raise ValueError(f"{part.strip()!r}: range reversed")
        counts |= {low, high} | {1 << k for k in range(high.bit_length())
                                 if low <= 1 << k <= high}
    return sorted(counts)
