"""The files a run writes: results.csv, warm.csv and backward.csv (one row per record) and results.json
(the configuration, the machine, every record with its lists, and the summaries).
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import asdict

import numpy as np
import scipy
import torch

import riemsvd
from riemsvd.bench.config import Config
from riemsvd.bench.records import BackwardRecord, BatchedRecord, Record, WarmRecord, csv_columns
from riemsvd.bench.summary import summarize_backward

__all__ = ["machine", "write_outputs"]


def machine() -> dict:
    """The CPU, its cores, torch's threads, the GPU and the versions of Python and the libraries."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        scipy=scipy.__version__,
        riemsvd=riemsvd.__version__,
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )


def _write_csv(path: str, record_type: type, records: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns(record_type), extrasaction="ignore")
        w.writeheader()
        w.writerows(asdict(r) for r in records)


def write_outputs(
    out: str,
    config: Config,
    records: list[Record],
    summary: dict,
    warm: list[WarmRecord] | None = None,
    batched: list[BatchedRecord] | None = None,
    backward: list[BackwardRecord] | None = None,
) -> list[str]:
    """results.csv (one row per record), results.json (everything, with histories), warm.csv and
    backward.csv where those ran; returns the paths."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "results.json")]
    if records or not backward:  # a --backward run has no solver table
        paths.insert(0, os.path.join(out, "results.csv"))
        _write_csv(paths[0], Record, records)
    if backward:
        paths.append(os.path.join(out, "backward.csv"))
        _write_csv(paths[-1], BackwardRecord, backward)
    if warm:
        paths.append(os.path.join(out, "warm.csv"))
        _write_csv(paths[-1], WarmRecord, warm)

    def listed(rs: list | None) -> list[dict] | None:
        return None if rs is None else [asdict(r) for r in rs]

    doc = dict(
        config=asdict(config),
        machine=machine(),
        records=listed(records),
        summary=summary,
        warm=listed(warm),
        batched=listed(batched),
        backward=listed(backward),
        backward_summary=summarize_backward(backward) if backward else None,
    )
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    return paths
