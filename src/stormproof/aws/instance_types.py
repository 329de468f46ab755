"""EC2 instance shapes: vCPUs and the memory a Batch job may ask on one instance.

Batch places a job on an instance only if the instance's *registered* memory holds it,
and the ECS agent keeps part of the nominal memory for itself and the OS; asking for
all 4 GiB of a c5.large would leave the job RUNNABLE forever. So a pool's node memory is
the nominal memory less ``ECS_RESERVED_FRACTION``.

The general-purpose, compute and memory families follow one rule (``c``: 2 GiB per
vCPU, ``m``: 4, ``r``: 8; ``large`` has 2 vCPUs, ``xlarge`` 4, ``Nxlarge`` 4N); other
types need ``vcpus`` and ``memory`` on the pool.
"""

from __future__ import annotations

import re

from stormproof.core.defs import Resources

ECS_RESERVED_FRACTION = 0.06
_GIB_PER_VCPU = {"c": 2, "m": 4, "r": 8}
_TYPE = re.compile(r"^(?P<family>[cmr])\d[a-z]*\.(?P<size>large|(?P<n>\d*)xlarge)$")


def shape(instance_type: str) -> Resources | None:
    """What a job may ask on one ``instance_type`` instance, or None if unknown here."""
    match = _TYPE.match(instance_type)
    if match is None:
        return None
    vcpus = 2 if match["size"] == "large" else 4 * int(match["n"] or 1)
    nominal_mib = vcpus * _GIB_PER_VCPU[match["family"]] * 1024
    usable = int(nominal_mib * (1 - ECS_RESERVED_FRACTION)) // 256 * 256
    return Resources(float(vcpus), usable)


def largest(instance_types: list[str]) -> tuple[Resources | None, list[str]]:
    """The largest shape among the types, and the types not known here."""
    known = [(t, shape(t)) for t in instance_types]
    unknown = [t for t, s in known if s is None]
    shapes = [s for _t, s in known if s is not None]
    if not shapes:
        return None, unknown
    return max(shapes, key=lambda s: (s.vcpus, s.memory_mib)), unknown
