"""A small real Butler repository and a bps config that runs a pipeline of AddTasks on it.

Used by the end-to-end test and the bps benchmark: a SQLite registry and a posix
datastore in a temporary directory, ``add_dataset0`` for a few detectors, and a
pipeline of ``lsst.pipe.base.tests.simpleQGraph.AddTask`` chained ``task0 -> task1 ->
...`` (each adds 3), so ``tasks × detectors`` quanta.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

VENV_BIN = Path(sys.executable).parent
INPUT = (0.0, 1.0, 2.0, 5.0)
ADDEND = 3


def make_repo(root: Path, *, tasks: int, detectors: int) -> Path:
    """Create the repository and the pipeline file; return the pipeline's path."""
    import numpy
    from lsst.pipe.base.tests.simpleQGraph import (
        makeSimpleButler,
        makeSimplePipeline,
        populateButler,
    )

    butler = makeSimpleButler(str(root / "repo"), run="test", inMemory=False)
    pipeline = makeSimplePipeline(tasks)
    populateButler(pipeline, butler)  # detector 0 and its add_dataset0
    for detector in range(1, detectors):
        butler.registry.insertDimensionData(
            "detector", {"instrument": "INSTR", "id": detector, "full_name": f"det{detector}"}
        )
        butler.put(numpy.array(INPUT), "add_dataset0", run="test", instrument="INSTR",
                   detector=detector)  # fmt: skip
    path = root / "pipeline.yaml"
    pipeline.write_to_uri(str(path))
    return path


def write_config(
    root: Path, pipeline: Path, *, output_run: str, service: str, extra: dict | None = None
) -> Path:
    """A bps submit config for the repository under ``root``."""
    config = {
        "wmsServiceClass": service,
        "computeSite": "local",
        "pipelineYaml": str(pipeline),
        "payload": {
            "payloadName": "addtasks",
            "butlerConfig": str(root / "repo"),
            "inCollection": "test",
            "dataQuery": "",
            "output": "u/tester/addtasks",
            "outputRun": output_run,
        },
        "submitPath": str(root / "submit" / "{outputRun}"),
        "requestMemory": 1000,
        "numberOfRetries": 1,
        # Quiet jobs: their logs land in pilot's run directory.
        "defaultPreCmdOpts": "--log-level=WARNING",
        # bps's final job runs `butler aggregate-graph -j {requestCpus}` with 16 by
        # default: on two cores that takes a minute, with two about five seconds.
        "finalJob": {"requestCpus": 2, "requestMemory": 2000},
        **(extra or {}),
    }
    path = root / f"bps-{output_run.replace('/', '_')}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bps_environment(service: str, pilot_home: Path | None = None) -> dict[str, str]:
    """The environment ``bps`` runs in: pipetask and butler from this virtualenv.

    bps's stock commands call ``${CTRL_MPEXEC_DIR}/bin/pipetask`` and
    ``${DAF_BUTLER_DIR}/bin/butler`` (EUPS-style); a pip install puts both in the
    virtualenv's ``bin``.
    """
    env = dict(os.environ)
    prefix = str(VENV_BIN.parent)
    env.update(CTRL_MPEXEC_DIR=prefix, DAF_BUTLER_DIR=prefix,
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}")  # fmt: skip
    # `bps report`, `status`, `cancel` and `restart` take the plugin from here.
    env["BPS_WMS_SERVICE_CLASS"] = service
    if pilot_home is not None:
        env["PILOT_HOME"] = str(pilot_home)
        env.pop("PILOT_DB", None)
    return env


def bps(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300):
    """Run the real ``bps`` command."""
    return subprocess.run(
        [str(VENV_BIN / "bps"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def run_id_of(output: str) -> str:
    """The id ``bps submit`` printed (``Run Id: ...``)."""
    for line in output.splitlines():
        if line.startswith("Run Id:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no `Run Id:` line in bps's output:\n{output}")


def outputs(root: Path, collection: str, dataset_type: str) -> dict[int, list[float]]:
    """The values of ``dataset_type`` in ``collection``, per detector."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(root / "repo"), collections=[collection])
    try:
        refs = butler.query_datasets(dataset_type, collections=[collection], explain=False)
        return {ref.dataId["detector"]: list(butler.get(ref)) for ref in refs}
    finally:
        butler.close()
