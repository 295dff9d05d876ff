"""The Python side of the hello example: a function job that summarizes the coadds."""

import os
from pathlib import Path


def summarize(pattern: str = "coadd-*.txt") -> dict:
    """Add up the coadd results; the return value is recorded with the attempt."""
    work = Path(os.environ["PILOT_RUN_DIR"]) / "work"
    values = {path.stem: int(path.read_text()) for path in sorted(work.glob(pattern))}
    total = sum(values.values())
    print(f"{len(values)} coadds, total {total}")
    return {"coadds": values, "total": total}
