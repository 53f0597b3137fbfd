"""cloudburst package."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("cloudburst-py")
except _metadata.PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0+unknown"
