"""corral: a Linux container runtime and supervisor on trio.

Kept import-free on purpose: the one-shot command line pays for every import.
"""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2-dev"
