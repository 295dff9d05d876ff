"""What earlier runs measured: the runtime estimates a run's packing starts from.

A workflow's jobs take about as long from one run to the next, so a rerun packs short
jobs into bundles from its first submission instead of learning their runtimes again.
"""

from __future__ import annotations

from executor.store.database import Store

#: Earlier runs of a workflow (same name, same owner), the newest, that estimates come from.
EARLIER_RUNS = 3
#: Succeeded jobs per label and run that are read (the last ones in workflow order): a
#: mean needs no more, and a restart of a 200,000-job run then reads a few thousand rows.
SAMPLE_PER_LABEL = 1000
#: Labels read per run, at most (a label per job says nothing about the next job anyway).
LABELS_PER_RUN = 1000

# Every step is an index search (runs_owner_created, jobs_run_label_state_position and
# the attempts' primary key): the labels of a run are found by skipping from one to the
# next, and each label's sample starts at its SAMPLE_PER_LABEL-th last succeeded job.
_LABEL_RUNTIMES_SQL = """
WITH RECURSIVE
this AS (SELECT id, name, owner, created FROM runs WHERE id = :run),
chosen(id) AS (
    SELECT id FROM this
    UNION ALL
    SELECT id FROM (
        SELECT r.id FROM runs r, this
        WHERE r.owner = this.owner AND r.created < this.created AND r.name = this.name
        ORDER BY r.created DESC LIMIT :earlier
    )
),
labels(run_id, label, n) AS (
    SELECT c.id, (SELECT min(j.label) FROM jobs j WHERE j.run_id = c.id), 1 FROM chosen c
    UNION ALL
    SELECT l.run_id,
        (SELECT min(j.label) FROM jobs j WHERE j.run_id = l.run_id AND j.label > l.label), l.n + 1
    FROM labels l WHERE l.label IS NOT NULL AND l.n < :labels
)
SELECT l.label AS label, total(max(a."end" - a.start, 0.0)) / count(*) AS seconds
FROM labels l
JOIN jobs j ON j.run_id = l.run_id AND j.label = l.label AND j.state = 'succeeded'
    AND j.position >= coalesce((
        SELECT k.position FROM jobs k
        WHERE k.run_id = l.run_id AND k.label = l.label AND k.state = 'succeeded'
        ORDER BY k.position DESC LIMIT 1 OFFSET :sample - 1
    ), -1)
JOIN attempts a ON a.run_id = j.run_id AND a.job = j.name
WHERE a.state = 'succeeded' AND a.start IS NOT NULL AND a."end" IS NOT NULL
GROUP BY l.label
"""


def label_runtimes(store: Store, run_id: str, *, earlier: int = EARLIER_RUNS) -> dict[str, float]:
    """Mean runtime in seconds of succeeded attempts per label, for run ``run_id`` to start from.

    Measured by the run itself (a restart continues from what it measured) and by the
    ``earlier`` newest runs before it with the same name and owner; at most the last
    :data:`SAMPLE_PER_LABEL` succeeded jobs of each label in each run count. Labels
    nobody measured are absent.
    """
    params = {
        "run": run_id, "earlier": earlier, "sample": SAMPLE_PER_LABEL, "labels": LABELS_PER_RUN,
    }  # fmt: skip
    return {row["label"]: row["seconds"] for row in store.query(_LABEL_RUNTIMES_SQL, params)}
