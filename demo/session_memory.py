"""`MemoryOptions`: how an ONNX Runtime session holds memory, apart from `demo.sessions` so that the bundle's
variant table (`demo.bundle_layout`) can name each encoder's options without importing ONNX Runtime."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryOptions:
    """How a session holds memory (CPU). The defaults are ONNX Runtime's; the encoders change both (see
    `demo.bundle_layout.VARIANT_TABLE`): `arena` keeps freed activations for reuse (a batched VGG16 pass leaves
    its activations held for good), `prepack` repacks constant weights into kernel layouts at load (a second copy
    of them)."""

    arena: bool = True
    prepack: bool = True
