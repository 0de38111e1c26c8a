"""`python -m export --run RUN [--quantize int8]`: the ONNX bundle a deployment loads."""
from __future__ import annotations

import argparse
import sys

from demo.errors import EXIT_CODES_HELP, EXIT_OK, run_command
from demo.logs import configure_cli_logging
from export.bundle import run_export
from export.config import ExportConfig
from train.config import add_arguments, from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export the run's VGG16 encoder and single-step decoder to ONNX in RUN/onnx/, with "
                    "vocab.json and manifest.json. The export checks itself against Keras and installs the "
                    "bundle only if every check passes; a failed export leaves the previous bundle in place.",
        epilog="example: python -m export --run models/default --quantize int8. " + EXIT_CODES_HELP,
    )
    add_arguments(parser, ExportConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()

    def export() -> int:
        run_export(from_args(ExportConfig, args))
        return EXIT_OK

    return run_command(export, after_error="export: nothing was installed; the previous bundle (if any) is unchanged")


if __name__ == "__main__":
    sys.exit(main())
