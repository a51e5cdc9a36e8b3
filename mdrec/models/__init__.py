"""Recommender models, found by name: `build_model("star", params, dims)`."""

from mdrec.models.base import MODELS, Batch, Dims, ModelConfig, RecModel, build_model, register

__all__ = ["MODELS", "Batch", "Dims", "ModelConfig", "RecModel", "build_model", "register", "load_all"]


def load_all() -> None:
    """Import every model module so that each registers itself."""
    from mdrec.models import emcdr, lightgcn, mmoe, ple, reference, sasrec, shared_bottom, star  # noqa: F401
