"""The input and output shapes of the CLIP models on Replicate that Image Browser can use.

Each schema turns items (texts, or image URLs) into prediction inputs and reads the vectors
back out of the output, keyed by the item's value. Nothing here talks to the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .base import EmbeddingError

IMAGE_PREFIXES = ("http://", "https://")


@dataclass(frozen=True)
class ModelRef:
    """`owner/name` with an optional `:version`, as REPLICATE_MODEL spells it."""

    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "ModelRef":
        """Split `owner/name[:version]`, refusing anything else."""
        slug, colon, version = ref.strip().partition(":")
        owner, _, name = slug.partition("/")
        if not owner or not name or "/" in name or (colon and not version):
            raise EmbeddingError(f"REPLICATE_MODEL must look like owner/name or owner/name:version, got {ref!r}")
        return cls(owner, name, version or None)

    @property
    def slug(self) -> str:
        """`owner/name` without the version."""
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class Request:
    """One prediction: its input, and the distinct item values it covers, in order."""

    input: dict[str, Any]
    values: tuple[str, ...]


class Schema(Protocol):
    """How one model wants its input and gives its output."""

    batch_size: int

    def key(self, value: str, kind: str) -> str:
        """The form in which an item travels (and comes back); may refuse an item."""
        ...

    def requests(self, keys: list[str], kind: str) -> list[Request]:
        """Predictions that cover `keys` (all texts or all image URLs, per `kind`)."""
        ...

    def parse(self, output: Any, request: Request) -> dict[str, list[float]]:
        """Vectors by item value; a value missing from the result means that item failed."""
        ...


class ClipEmbeddings:
    """`krthr/clip-embeddings`: `image` (a URL) or `text` in, `{"embedding": [...]}` out."""

    batch_size = 1

    def key(self, value: str, kind: str) -> str:
        """Items travel as they are."""
        return value

    def requests(self, keys: list[str], kind: str) -> list[Request]:
        """One prediction per distinct item."""
        field = "image" if kind == "image" else "text"
        return [Request({field: key}, (key,)) for key in dict.fromkeys(keys)]

    def parse(self, output: Any, request: Request) -> dict[str, list[float]]:
        """Read the single embedding."""
        if not isinstance(output, dict) or not isinstance(output.get("embedding"), list):
            raise EmbeddingError(f"unexpected output from the model: {_preview(output)}")
        return {request.values[0]: output["embedding"]}


class ClipFeatures:
    """`andreasjansson/clip-features`: newline-separated `inputs`, a list of results out.

    Lines that start with http(s):// are read as image URLs, the rest as text. The model keys
    results by line text, so each prediction carries distinct lines only.
    """

    batch_size = 32

    def key(self, value: str, kind: str) -> str:
        """One line: a URL as it is, a text with its line breaks made spaces."""
        if kind == "image":
            return value
        text = " ".join(value.split())  # a newline would split one text into two inputs
        if text.startswith(IMAGE_PREFIXES):
            raise EmbeddingError(f"the model would read the text {text[:40]!r} as an image URL")
        return text

    def requests(self, keys: list[str], kind: str) -> list[Request]:
        """Distinct lines, `batch_size` per prediction."""
        lines = list(dict.fromkeys(keys))
        return [
            Request({"inputs": "\n".join(chunk)}, tuple(chunk))
            for chunk in (lines[i : i + self.batch_size] for i in range(0, len(lines), self.batch_size))
        ]

    def parse(self, output: Any, request: Request) -> dict[str, list[float]]:
        """Match results to lines by their `input` text."""
        if not isinstance(output, list):
            raise EmbeddingError(f"unexpected output from the model: {_preview(output)}")
        found: dict[str, list[float]] = {}
        for entry in output:
            if isinstance(entry, dict) and isinstance(entry.get("embedding"), list):
                found[str(entry.get("input"))] = entry["embedding"]
        return {value: found[value] for value in request.values if value in found}


SCHEMAS: dict[str, type] = {
    "krthr/clip-embeddings": ClipEmbeddings,
    "andreasjansson/clip-features": ClipFeatures,
}


def schema_for(ref: ModelRef) -> Schema:
    """The schema of a supported model; a clear error for any other."""
    try:
        return SCHEMAS[ref.slug]()
    except KeyError:
        raise EmbeddingError(
            f"REPLICATE_MODEL {ref.slug} is not supported; use one of {', '.join(SCHEMAS)}"
        ) from None


def _preview(output: Any) -> str:
    text = repr(output)
    return text if len(text) <= 120 else text[:117] + "..."
