"""The regional master patient index (MPI): local identities of each site linked to master patients.

The small, stable API other modules call lives in :mod:`archipel.platform.identity.service`:
:func:`register`, :func:`master_of` and :func:`locals_of`.
"""

from archipel.platform.identity.service import (
    IdentityError,
    LinkOutcome,
    LocalIdentityInput,
    UnknownIssuer,
    locals_of,
    master_of,
    register,
)

__all__ = [
    "IdentityError",
    "LinkOutcome",
    "LocalIdentityInput",
    "UnknownIssuer",
    "locals_of",
    "master_of",
    "register",
]
