"""Command line of the training side: `python -m train {prepare,features,fit,evaluate} ...`."""
from __future__ import annotations

import argparse
import sys

from demo.errors import EXIT_CODES_HELP, EXIT_OK, run_command
from demo.logs import configure_cli_logging
from train.config import EvaluateConfig, FeaturesConfig, FitConfig, PrepareConfig, add_arguments, from_args

EPILOG = """examples:
  python -m train prepare --dataset synthetic --run models/default --num-images 3000
  python -m train prepare --dataset flickr30k --data-dir ~/data/flickr30k --run models/f30k
  python -m train features --run models/default --vgg-weights none
  python -m train fit --run models/default
  python -m train evaluate --run models/default --beam 1 3 5

""" + EXIT_CODES_HELP

# (command, its configuration, one-line help, description)
COMMANDS = (
    ("prepare", PrepareConfig, "read a dataset: captions, splits, vocabulary, report",
     "Read captions, drop (and count) those whose image is missing or unreadable, assign splits where "
     "the dataset has none, and build vocab.json."),
    ("features", FeaturesConfig, "VGG16 fc2 feature cache (resumable)",
     "Run VGG16 up to fc2 over every image of the run into a float16 cache. Interrupted runs resume "
     "where they stopped."),
    ("fit", FitConfig, "train the merge captioner (checkpoints, --resume)",
     "Teacher-forced training over the feature cache: early stopping on validation loss, learning-rate "
     "reduction, best and last checkpoints, CSV and TensorBoard logs."),
    ("evaluate", EvaluateConfig, "BLEU-1..4 per beam width into RUN/metrics.json",
     "Caption a split with greedy (--beam 1) and beam search and score it with NLTK's corpus BLEU "
     "against all references of each image."),
)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Prepare data for and train the VGG16+LSTM captioner.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, config, summary, description in COMMANDS:
        subparser = commands.add_parser(name, help=summary, description=description, epilog=EXIT_CODES_HELP)
        add_arguments(subparser, config)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        from train.prepare import run_prepare  # lazy: each command imports its own module (fit loads TensorFlow)

        run_prepare(from_args(PrepareConfig, args))
    elif args.command == "features":
        from train.features import extract_features  # lazy: as above

        extract_features(from_args(FeaturesConfig, args))
    elif args.command == "fit":
        from train.tf_import import prefer_bfc_allocator  # lazy: as above

        prefer_bfc_allocator()  # before train.fit imports TensorFlow
        from train.fit import run_fit  # lazy: as above

        run_fit(from_args(FitConfig, args))
    elif args.command == "evaluate":
        from train.evaluate import run_evaluate  # lazy: as above

        run_evaluate(from_args(EvaluateConfig, args))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    return run_command(lambda: run(args), interrupted="interrupted; run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
