"""`python -m demo caption|serve`: captions from the shell, or the web app. No TensorFlow."""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from demo.bundle_layout import DECODER_TOPK_FILES, VARIANTS
from demo.caption_batches import DEFAULT_BATCH_SIZE, JsonOutput, TextOutput, caption_paths
from demo.encoder_batching import DEFAULT_MAX_BATCH_SIZE
from demo.errors import EXIT_CODES_HELP, EXIT_OK, EXIT_SOME_INPUTS_REFUSED, BadInput, run_command
from demo.generation import DEFAULTS
from demo.image_files import IMAGE_SUFFIXES, find_images
from demo.logs import configure_cli_logging
from demo.results_file import ResultsFile, check_suffix
from demo.sessions import PROVIDERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description="Caption images with an exported bundle "
                                     "on ONNX Runtime (CUDA or CPU). No TensorFlow needed.", epilog=EXIT_CODES_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    caption = commands.add_parser("caption", help="caption image files and folders of images",
                                  description="Caption images batch by batch. Without --out: one line per image "
                                              "on stdout (PATH<TAB>caption), or JSON with --json. With --out FILE "
                                              "(.jsonl or .csv): one row per image, appended as each batch is "
                                              "done; rerunning the same command skips the images already in "
                                              "FILE and retries those refused. Unreadable images are reported on "
                                              "stderr and skipped; a progress bar goes to stderr.",
                                  epilog=EXIT_CODES_HELP)
    caption.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                         help=f"an image file, or a folder: its {' '.join(IMAGE_SUFFIXES)} files (any case, "
                              "hidden ones left out), sorted")
    caption.add_argument("--recursive", action="store_true", help="also take the images in subfolders of folders")
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
    caption.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE,
                         help="images loaded and captioned together (default: %(default)s; with the int8 "
                              "encoder on a 2-core CPU, batches of 4 to 32 measured alike and batch 1 10-25%% "
                              "slower; a kill loses at most one batch)")
    written = caption.add_mutually_exclusive_group()
    written.add_argument("--json", action="store_true", help="print JSON: captions, scores, n-best, timings")
    written.add_argument("--out", type=_results_path, metavar="FILE",
                         help="write the results to FILE instead of stdout: .jsonl (one JSON object per image) or "
                              ".csv (path, caption, log_prob, error[, candidates], word_log_probs); resumable")
    serve = commands.add_parser("serve", help="the Gradio app: greedy and beam search side by side",
                                description="Serve the captioner web app (and its `caption` API endpoint).",
                                epilog=EXIT_CODES_HELP)
    serve.add_argument("--model", type=Path, default=Path("models/default/onnx"), help="bundle folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    serve.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    serve.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    serve.add_argument("--provider", choices=PROVIDERS, default="auto", help="execution provider")
    serve.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                       help="requests in flight that share encoder passes of up to this many images (each answer "
                            "equals the request's alone); 1: no batching, 2 requests at once (default: %(default)s)")
    return parser


def caption_command(args: argparse.Namespace) -> int:
    from demo.captioner import Captioner  # lazy: `serve` alone needs Gradio, `caption` alone ORT

    images = find_images(args.images, args.recursive)  # user errors before the model loads
    with ResultsFile(args.out, candidates=args.num_return_sequences > 1, word_log_probs=True) if args.out \
            else nullcontext() as out:
        todo = out.todo(images) if out else images
        if out and not todo:
            return EXIT_OK
        captioner = Captioner(args.model, provider=args.provider, variant=args.variant,
                              decoder_variant=args.decoder_variant)
        options = captioner.options(args.num_beams, args.max_length, args.length_penalty, args.num_return_sequences)
        output = out or (JsonOutput({"provider": captioner.provider, "variant": captioner.variant,
                                     "decoder_variant": captioner.decoder_variant}) if args.json else TextOutput())
        refused = caption_paths(captioner, todo, options, args.batch_size, output)
    if args.json:
        output.finish()
    return EXIT_SOME_INPUTS_REFUSED if refused else EXIT_OK


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _results_path(text: str) -> Path:
    try:
        return check_suffix(Path(text))
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--out {text}: ")) from exc


def serve_command(args: argparse.Namespace) -> int:
    from demo.web.serve import ServeConfig, launch  # lazy: Gradio only for `serve`

    launch(ServeConfig(args.model, args.host, args.port, args.share, args.provider, args.max_batch_size))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    command = serve_command if args.command == "serve" else caption_command
    return run_command(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
