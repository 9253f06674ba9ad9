"""A results folder per run, results/<timestamp>-<name>/, with CSV and JSON (the
environment included) beside the plots, so a run can be compared with later ones."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

FIELDS = ["collective", "algo", "dtype", "op", "ranks", "nodes", "bytes", "count", "time_us",
          "min_us", "max_us", "iters", "algbw", "busbw", "ratio", "wrong", "chosen"]


def new_folder(base: str, name: str) -> Path:
    folder = Path(base) / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or FIELDS
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def json_line(row: dict) -> str:
    return json.dumps({k: row[k] for k in row}, default=str)
