"""`python -m demo caption|serve`: captions from the shell, or the web app. No TensorFlow."""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from demo import config_flags, generation
from demo.bundle_layout import DECODER_VARIANTS, DEFAULT_BUNDLE, DEFAULT_VARIANT, QUANTIZED, VARIANTS
from demo.caption_batches import DEFAULT_BATCH_SIZE, JsonOutput, TextOutput, caption_paths
from demo.errors import EXIT_CODES_HELP, EXIT_OK, EXIT_SOME_INPUTS_REFUSED, BadInput, run_command
from demo.image_files import IMAGE_SUFFIXES, find_images
from demo.logs import configure_cli_logging
from demo.preprocess import ImageError
from demo.results_file import ResultsFile, check_suffix
from demo.serve_config import ServeConfig
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
    _model_options(caption)
    caption.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE,
                         help="images loaded and captioned together (default: %(default)s; a kill loses at most "
                              "one batch; `python -m bench --only folder` compares batch sizes on this machine)")
    engine = caption.add_argument_group("on a Ray cluster (pip install -r requirements/ray.txt)")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process (default); ray: a Ray Data job, one captioner per actor, rows "
                             "appended to --out (required) as they come back, resumable as with local")
    engine.add_argument("--address", default=None,
                        help="the Ray cluster to join (auto, or ray://HEAD:10001); default: a local one on 127.0.0.1")
    engine.add_argument("--actors", type=_positive, default=None,
                        help="captioners held at once (default: the cluster's CPUs / --threads-per-actor)")
    engine.add_argument("--threads-per-actor", type=_positive, default=1,
                        help="CPUs per actor, its ONNX Runtime threads (default: %(default)s)")
    engine.add_argument("--gpus-per-actor", type=float, default=0.0,
                        help="GPUs (or a share of one) per actor, with --provider cuda (default: 0)")
    written = caption.add_mutually_exclusive_group()
    written.add_argument("--json", action="store_true", help="print JSON: captions, scores, n-best, timings")
    written.add_argument("--out", type=_results_path, metavar="FILE",
                         help="write the results to FILE instead of stdout: .jsonl (one JSON object per image) or "
                              ".csv (path, caption, log_prob, error[, candidates], word_log_probs); resumable")
    explain = commands.add_parser("explain", help="show what in each image made the model say each word",
                                  description="Caption each image, then hide one region of it at a time (a 7 x 7 "
                                              "grid of overlapping patches) and measure how much each word's "
                                              "log-probability falls: one PNG per word with that map over the "
                                              "image, a strip of all the words, and explanation.json (the maps "
                                              "as numbers, the grid's geometry), in OUT/IMAGE-NAME/.",
                                  epilog=EXIT_CODES_HELP)
    explain.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    explain.add_argument("--out", type=Path, required=True, help="folder for the results (one subfolder per image)")
    explain.add_argument("--candidate", type=int, default=0,
                         help="which of the search's captions to explain: 0 the best (default), 1 the next, ... "
                              "(list more with --num-return-sequences)")
    _model_options(explain)
    serve = commands.add_parser("serve", help="the Gradio app: greedy and beam search side by side",
                                description="Serve the captioner web app (and its `caption` API endpoint).",
                                epilog=EXIT_CODES_HELP)
    config_flags.add_arguments(serve, ServeConfig)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The bundle, the generation options and where to run: what `caption` and `explain` share."""
    parser.add_argument("--model", type=Path, default=DEFAULT_BUNDLE,
                        help="bundle folder made by `python -m export` (default: %(default)s)")
    generation.add_arguments(parser)
    parser.add_argument("--provider", choices=PROVIDERS, default="auto",
                        help="execution provider: auto takes CUDA when it works, else CPU (default: auto)")
    parser.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT, help="encoder variant")
    parser.add_argument("--decoder-variant", choices=DECODER_VARIANTS, default=DEFAULT_VARIANT,
                        help=f"decoder step variant ({', '.join(QUANTIZED)}: where the export shipped one; default: "
                             "%(default)s)")


def caption_command(args: argparse.Namespace) -> int:
    from demo.captioner import Captioner  # lazy: `serve` alone needs Gradio, `caption` alone ORT

    config = generation.from_args(args)  # user errors before the model loads
    if args.engine == "ray" and not args.out:
        raise BadInput("--engine ray writes its rows to a file: add --out FILE.jsonl (or .csv)")
    images = find_images(args.images, args.recursive)
    with ResultsFile(args.out, candidates=config.num_return_sequences > 1, word_log_probs=True) if args.out \
            else nullcontext() as out:
        todo = out.todo(images) if out else images
        if out and not todo:
            return EXIT_OK
        if args.engine == "ray":
            return _caption_on_ray(args, config, out, todo)
        captioner = Captioner(args.model, provider=args.provider, variant=args.variant,
                              decoder_variant=args.decoder_variant)
        options = captioner.options(config)
        output = out or (JsonOutput({"provider": captioner.provider, "variant": captioner.variant,
                                     "decoder_variant": captioner.decoder_variant}) if args.json else TextOutput())
        refused = caption_paths(captioner, todo, options, args.batch_size, output)
    if args.json:
        output.finish()
    return EXIT_SOME_INPUTS_REFUSED if refused else EXIT_OK


def _caption_on_ray(args: argparse.Namespace, config, out: ResultsFile, todo: list[Path]) -> int:
    from demo.ray_captioning import RaySettings, caption_with_ray  # lazy: Ray only for --engine ray

    settings = RaySettings(args.address, args.actors, args.threads_per_actor, args.gpus_per_actor)
    refused = caption_with_ray(args.model, todo, out, config, args.provider, args.variant, args.decoder_variant,
                               args.batch_size, settings)
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
    from demo.web.serve import launch  # lazy: Gradio only for `serve`

    launch(config_flags.from_args(ServeConfig, args))
    return EXIT_OK


def explain_command(args: argparse.Namespace) -> int:
    from demo.captioner import Captioner  # lazy: as for `caption`
    from demo.explain_files import write_explanation

    config = generation.from_args(args)
    captioner = Captioner(args.model, provider=args.provider, variant=args.variant,
                          decoder_variant=args.decoder_variant)
    refused = 0
    for path in args.images:
        try:
            folder = write_explanation(captioner, path, config, args.candidate, args.out)
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            refused += 1
            continue
        print(f"{path}\t{folder}")
    return EXIT_SOME_INPUTS_REFUSED if refused else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    command = {"serve": serve_command, "caption": caption_command, "explain": explain_command}[args.command]
    return run_command(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
