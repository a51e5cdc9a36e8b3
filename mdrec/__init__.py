"""mdrec: LLM-written synthetic interactions for the cold domains of a multi-domain recommender."""

__version__ = "0.1.0"
