"""The one error type of corral's network layer."""

from __future__ import annotations

from corral.errors import CorralError


class NetworkError(CorralError):
    """A network could not be set up or changed; the message names what and why.

    Raised only after everything the failed step made was undone (no veth, lease or nftables
    element is left by a failed call)."""
