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
  python -m train fit --run models/default --strategy multiworker --local-workers 2
  TF_CONFIG='{"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 0}}' \
      python -m train fit --run /shared/runs/f30k --strategy multiworker
  python -m train evaluate --run models/default --beam 1 3 5

""" + EXIT_CODES_HELP

# (command, its configuration, one-line help, description)
COMMANDS = (
    ("prepare", PrepareConfig, "read a dataset: captions, splits, vocabulary, report",
     "Read captions, drop (and count) those whose image is missing or unreadable, assign splits where "
     "the dataset has none, and build vocab.json."),
    ("features", FeaturesConfig, "VGG16 fc2 feature cache (resumable, shardable)",
     "Run VGG16 up to fc2 over every image of the run into a float16 cache. Interrupted runs resume "
     "where they stopped. Several processes can fill one cache together: start `--shard 0/N` .. "
     "`--shard N-1/N` with the same options (on GPUs or machines sharing the run folder); `--status` shows "
     "how far it is."),
    ("fit", FitConfig, "train the merge captioner (checkpoints, --resume)",
     "Teacher-forced training over the feature cache: early stopping on validation loss, learning-rate "
     "reduction, best and last checkpoints, CSV and TensorBoard logs. On several machines: --strategy "
     "multiworker with TF_CONFIG or --workers/--worker-index on each (the chief, worker 0, writes the run), or "
     "--local-workers N to try it on this one."),
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
        features_cfg = from_args(FeaturesConfig, args)
        if features_cfg.status:
            from train.feature_status import cache_status  # lazy: as above (and no TensorFlow)

            print(cache_status(features_cfg))
            return EXIT_OK
        from train.features import extract_features  # lazy: as above

        extract_features(features_cfg)
    elif args.command == "fit":
        cfg = from_args(FitConfig, args)
        if cfg.local_workers:
            from train.local_workers import run_local_workers  # lazy, and without TensorFlow: it only launches

            run_local_workers(cfg)
            return EXIT_OK
        from train.tf_import import prefer_bfc_allocator  # lazy: as above

        prefer_bfc_allocator()  # before train.fit imports TensorFlow
        from train.fit import run_fit  # lazy: as above

        run_fit(cfg)
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
