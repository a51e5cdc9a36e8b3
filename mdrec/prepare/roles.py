"""Domain roles: which domains are cold (sparse, to be helped) and which are rich."""

from __future__ import annotations

from mdrec.config import Role


def assign_roles(measure: dict[str, float], explicit: dict[str, Role], cold_ratio: float) -> dict[str, Role]:
    """Named roles win; the others are cold when their measure is below `cold_ratio` of the largest.

    The default measure is interaction volume, not fill rate: on Amazon Food/Kitchen the sparse
    domain (Food, 3.4x fewer interactions) has the *higher* fill rate because its catalog is
    smaller too, so density in the users x items sense calls the wrong domain cold.
    """
    largest = max(measure.values(), default=0)
    roles = {}
    for domain, n in measure.items():
        if domain in explicit:
            roles[domain] = Role(explicit[domain])
        else:
            roles[domain] = Role.cold if largest and n < cold_ratio * largest else Role.rich
    return roles
