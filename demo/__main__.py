"""`python -m demo caption|serve`: captions from the shell, or the web app. No TensorFlow."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from demo.bundle_layout import DECODER_TOPK_FILES, VARIANTS
from demo.errors import EXIT_CODES_HELP, EXIT_OK, EXIT_SOME_INPUTS_REFUSED, run_command
from demo.generation import DEFAULTS
from demo.logs import configure_cli_logging
from demo.sessions import PROVIDERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description="Caption images with an exported bundle "
                                     "on ONNX Runtime (CUDA or CPU). No TensorFlow needed.", epilog=EXIT_CODES_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    caption = commands.add_parser("caption", help="print a caption for each image",
                                  description="Print one line per image (PATH<TAB>caption), or JSON with --json. "
                                              "Unreadable images are reported on stderr and skipped.",
                                  epilog=EXIT_CODES_HELP)
    caption.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    caption.add_argument("--model", type=Path, default=Path("models/default/onnx"),
                         help="bundle folder made by `python -m export` (default: models/default/onnx)")
    caption.add_argument("--num-beams", type=int, default=DEFAULTS.num_beams,
                         help="1 is greedy search (default: %(default)s)")
    caption.add_argument("--max-length", type=int, default=DEFAULTS.max_length, help="longest caption in words "
                         "(default: the vocabulary's)")
    caption.add_argument("--length-penalty", type=float, default=DEFAULTS.length_penalty,
                         help="GNMT alpha for ranking beams (default: %(default)s)")
    caption.add_argument("--num-return-sequences", type=int, default=DEFAULTS.num_return_sequences,
                         help="captions to list per image (at most --num-beams; default: %(default)s)")
    caption.add_argument("--provider", choices=PROVIDERS, default="auto",
                         help="execution provider: auto takes CUDA when it works, else CPU (default: auto)")
    caption.add_argument("--variant", choices=VARIANTS, default=VARIANTS[0], help="encoder variant")
    caption.add_argument("--decoder-variant", choices=tuple(DECODER_TOPK_FILES), default="fp32",
                         help="decoder step variant (int8: where the export shipped one; default: fp32)")
    caption.add_argument("--batch-size", type=int, default=8, help="images encoded together (default: 8)")
    caption.add_argument("--json", action="store_true", help="print JSON: captions, scores, n-best, timings")
    serve = commands.add_parser("serve", help="the Gradio app: greedy and beam search side by side",
                                description="Serve the captioner web app (and its `caption` API endpoint).",
                                epilog=EXIT_CODES_HELP)
    serve.add_argument("--model", type=Path, default=Path("models/default/onnx"), help="bundle folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    serve.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    serve.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    serve.add_argument("--provider", choices=PROVIDERS, default="auto", help="execution provider")
    return parser


def caption_command(args: argparse.Namespace) -> int:
    from demo.captioner import Captioner  # lazy: `serve` alone needs Gradio, `caption` alone ONNX Runtime
    from demo.preprocess import ImageError, load_image

    captioner = Captioner(args.model, provider=args.provider, variant=args.variant,
                          decoder_variant=args.decoder_variant)
    options = captioner.options(args.num_beams, args.max_length, args.length_penalty, args.num_return_sequences)
    failed, loaded = 0, []
    for path in args.images:
        try:
            loaded.append((path, load_image(path)))
        except ImageError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)  # the others are still captioned
    results = []
    for start in range(0, len(loaded), args.batch_size):
        batch = loaded[start:start + args.batch_size]
        pixels = np.stack([pixels for _, pixels in batch])
        results += zip([p for p, _ in batch], captioner.caption_pixels(pixels, options))
    if args.json:
        print(json.dumps({"provider": captioner.provider, "variant": captioner.variant,
                          "decoder_variant": captioner.decoder_variant,
                          "images": [{"image": str(p), **r.to_json()} for p, r in results]}, indent=2))
    else:
        for path, result in results:
            print(f"{path}\t{result.caption}")
            for candidate in result.candidates[1:]:
                print(f"{path}\t  alt ({candidate.score:.3f}): {candidate.caption}")
    return EXIT_SOME_INPUTS_REFUSED if failed else EXIT_OK


def serve_command(args: argparse.Namespace) -> int:
    from demo.web.serve import ServeConfig, launch  # lazy: Gradio only for `serve`

    launch(ServeConfig(args.model, args.host, args.port, args.share, args.provider))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    command = serve_command if args.command == "serve" else caption_command
    return run_command(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
