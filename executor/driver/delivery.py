"""What of the shipped code travels with each bundle: a path, chunks of bytes, or nothing.

On a site with a shared filesystem a bundle carries only the tarball's hash and its
path in the run directory. On a site without one, the first bundle to each pool
carries the tarball's bytes; after that bundles carry only the hash, and a worker
whose node does not have the tree yet answers ``code_missing`` (with the chunks its
node already holds) instead of running the bundle. The driver then sends that
bundle again with what is missing. So the bytes go only where they are missing,
and a node unpacks them once into its cache (:mod:`executor.worker.codecache`).

A site's ``max_payload`` (Globus Compute accepts 10 MB per task) splits a tarball
into chunks that fit: each resend carries as many missing chunks as fit, and a
node assembles them before verifying the whole against its hash.

This is policy on plain data; the driver does the sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.model.states import FailureClass
from executor.shipping.tarball import Shipment
from executor.worker.outcome import Outcome, failed

# Room left in a task's payload for the bundle's job descriptions.
PAYLOAD_HEADROOM = 0.25
# Resends of one bundle beyond its chunk count before its jobs fail as code_unavailable.
EXTRA_ROUNDS = 3


@dataclass(frozen=True)
class _Parcel:
    shipment: Shipment
    runtime: bool
    chunk_size: int

    @property
    def chunks(self) -> int:
        return max(1, -(-self.shipment.size // self.chunk_size))


class CodeDelivery:
    """Chooses each bundle's code payload for one run.

    Parameters
    ----------
    shipments
        The user's code, and pilot's worker runtime when the site ships it
        (``runtime=True`` entries: unpacked, but not put on the jobs' paths).
    shared_filesystem
        Workers can read the run directory.
    max_payload
        Bytes one task may carry (``None``: no limit).
    """

    def __init__(
        self,
        shipments: Sequence[tuple[Shipment, bool]],
        *,
        shared_filesystem: bool,
        max_payload: int | None = None,
    ):
        room = int(max_payload * (1 - PAYLOAD_HEADROOM)) if max_payload else None
        self.shared = shared_filesystem
        self._parcels = [
            _Parcel(shipment, runtime, max(1, min(shipment.size, room or shipment.size)))
            for shipment, runtime in shipments
        ]
        self._room = room
        # What every bundle carries once its node has the bytes: the same for all of them.
        self._descriptors = [self._descriptor(parcel) for parcel in self._parcels]
        self._sent_first: set[str] = set()  # pools whose first bundle carried the bytes
        self._bytes: dict[str, bytes] = {}

    @property
    def rounds_allowed(self) -> int:
        return sum(parcel.chunks for parcel in self._parcels) + EXTRA_ROUNDS

    def payload(self, pool: str) -> list[dict[str, Any]]:
        """What a new bundle for ``pool`` carries: descriptors, with bytes for a pool's first."""
        if self.shared or pool in self._sent_first:
            return self._descriptors
        self._sent_first.add(pool)
        wanted: dict[str, list[int]] = {parcel.shipment.sha256: [] for parcel in self._parcels}
        return self.for_missing(wanted)

    def for_missing(self, missing: dict[str, list[int]]) -> list[dict[str, Any]]:
        """The payload of a resend to a node that reported ``missing`` (sha -> chunks it has)."""
        room, sent_any = self._room, False
        payload = []
        for parcel in self._parcels:
            descriptor = self._descriptor(parcel)
            have = missing.get(parcel.shipment.sha256)
            if have is not None:
                chunks = {}
                for index in range(parcel.chunks):
                    if index in have:
                        continue
                    if room is not None and sent_any and parcel.chunk_size > room:
                        break  # the rest goes in the next round
                    chunks[index] = self._chunk(parcel, index)
                    sent_any = True
                    if room is not None:
                        room -= parcel.chunk_size
                descriptor["chunks"] = chunks
            payload.append(descriptor)
        return payload

    def _descriptor(self, parcel: _Parcel) -> dict[str, Any]:
        descriptor: dict[str, Any] = {
            "sha256": parcel.shipment.sha256,
            "size": parcel.shipment.size,
            "chunk_size": parcel.chunk_size,
            "runtime": parcel.runtime,
        }
        if self.shared:
            descriptor["path"] = str(parcel.shipment.path)
        return descriptor

    def _chunk(self, parcel: _Parcel, index: int) -> bytes:
        sha = parcel.shipment.sha256
        if sha not in self._bytes:
            self._bytes[sha] = parcel.shipment.path.read_bytes()
        start = index * parcel.chunk_size
        return self._bytes[sha][start : start + parcel.chunk_size]


def plan_delivery(
    site: Any, shipment: Shipment | None, run_dir: Path
) -> tuple[CodeDelivery | None, str | None]:
    """The run's delivery (``None``: nothing to ship) and the shipped runtime's package name."""
    parcels: list[tuple[Shipment, bool]] = []
    if shipment is not None:
        parcels.append((shipment, False))
    package = None
    if site.ship_runtime:
        from executor.shipping.runtime import build_runtime

        runtime, package = build_runtime(run_dir / "runtime")
        parcels.append((runtime, True))
    if not parcels:
        return None, None
    delivery = CodeDelivery(
        parcels, shared_filesystem=site.shared_filesystem, max_payload=site.payload_limit
    )
    return delivery, package


def code_never_arrived(missing: dict[str, list[int]]) -> Outcome:
    """The outcome of each job of a bundle whose node kept lacking code after every resend."""
    return failed(
        FailureClass.CODE_UNAVAILABLE.value,
        "the shipped code never arrived whole on the worker's node "
        f"(still missing: {', '.join(sha[:12] for sha in missing)})",
    )
