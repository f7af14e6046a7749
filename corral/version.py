"""corral's own version and the runtime-spec version it implements."""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2-dev"
