"""`python -m export --run RUN [--quantize int8]`: the ONNX bundle a deployment loads."""
from __future__ import annotations

import argparse
import sys

from train.config import ExportConfig, add_arguments, from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export the run's VGG16 encoder and single-step decoder to ONNX in RUN/onnx/, with "
                    "vocab.json and manifest.json. The export checks itself against Keras and installs the "
                    "bundle only if every check passes; a failed export leaves the previous bundle in place.",
        epilog="example: python -m export --run models/default --quantize int8",
    )
    add_arguments(parser, ExportConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.bundle import ExportError, run_export
    from export.parity import ParityError
    from train.features import CacheMismatch

    try:
        run_export(from_args(ExportConfig, args))
    except (FileNotFoundError, ValueError, ExportError, ParityError, CacheMismatch) as exc:
        print(f"error: {exc}\nexport: nothing was installed; the previous bundle (if any) is unchanged",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
