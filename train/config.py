"""Configuration dataclasses for each command.

Every field has a default; `demo.config_flags.add_arguments` exposes each one as `--field-name` with the field's
`help` metadata, so the CLI and the code can never disagree about a default.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.bundle_layout import DEFAULT_RUN
from demo.config_flags import add_arguments, from_args, nested, option, to_arguments, to_json
from demo.generation import GENERATION, GenerationConfig
from train.dataset_registry import NAMES as DATASET_NAMES

__all__ = ["add_arguments", "from_args", "to_arguments", "to_json"]  # the train commands' flags, from here as before


@dataclass
class PrepareConfig:
    run: Path = option(DEFAULT_RUN, "run folder to create or update")
    dataset: str = option("synthetic", "which dataset layout to read", choices=DATASET_NAMES)
    data_dir: Path | None = option(
        None, "dataset folder (synthetic: where scenes are generated; default RUN/synthetic)"
    )
    images_dir: Path | None = option(None, "image folder, when it is not where the layout expects it")
    num_images: int = option(3000, "synthetic only: number of scenes to generate")
    min_count: int | None = option(None, "keep words seen at least this often in training captions "
                                       "(default: 5 for real data, 1 for synthetic)")
    max_length: int = option(30, "longest caption in words; longer ones are truncated and counted")
    max_vocab: int | None = option(None, "cap on vocabulary size, special tokens included")
    val_size: int | None = option(None, "images held out for validation where the dataset has no split "
                                      "(default: 5%% of images, at most 1000)")
    test_size: int | None = option(None, "images held out for testing where the dataset has no split "
                                       "(default: 5%% of images, at most 1000)")
    seed: int = option(0, "seed for synthetic scenes and split assignment")
    workers: int = option(2, "threads that decode images while checking them")


@dataclass
class FeaturesConfig:
    run: Path = option(DEFAULT_RUN, "run folder made by `prepare`")
    vgg_weights: str = option(
        "imagenet",
        "'imagenet' (downloaded by Keras), a path to a local VGG16 .h5 weights file, 'calibrated' (offline: "
        "weights computed from the run's own training images, no ImageNet, written once to "
        "RUN/vgg16_calibrated.h5), or 'none' for a seeded random init (sees colours and places, hardly shapes)",
    )
    layer: str = option("fc2", "which VGG16 layer to cache: 'fc2' (float16 x 4096 per image: what `fit` trains "
                               "on) or 'block5_pool' (7x7x512 = 25088 per image, float16, about 1.6 GB for "
                               "Flickr30K's 31,783 images: what `fit --fine-tune-top` trains fc1 and fc2 on)",
                        choices=("fc2", "block5_pool"))
    batch_size: int = option(16, "images per forward pass")
    workers: int = option(2, "threads that decode images ahead of the forward pass")
    seed: int = option(0, "seed of --vgg-weights none's random init, or of calibrated's choice of images")
    overwrite: bool = option(False, "discard an existing cache built with other settings (never while another "
                                    "process is extracting into it)")
    shard: str | None = option(None, "I/N: compute only shard I (0 to N-1) of N, the batches b with b %% N == I, "
                                     "so that N processes (one per GPU, or per machine on a shared disk such as "
                                     "NFS mounted with locking) fill the same cache together; start them with the "
                                     "same settings, in any order. The one to finish last marks the cache "
                                     "complete; the others exit 0 with what is left. The finished cache is the "
                                     "same, byte for byte, as one process's (default: the whole cache)")
    status: bool = option(False, "print how far the cache is (batches done in all and per shard, complete or "
                                 "not, its weights) and exit; computes nothing")
    shards: int | None = option(None, "with --status: count the batches per shard for N shards (default: the N "
                                      "of the last --shard I/N start while the cache is partial, else 1)")


@dataclass
class FitConfig:
    run: Path = option(DEFAULT_RUN, "run folder with vocab.json and a feature cache")
    epochs: int = option(15, "maximum number of epochs (early stopping usually ends sooner; `make demo` uses "
                           "this default too)")
    batch_size: int = option(64, "captions per step (global batch across replicas)")
    bucket_window: int = option(1, "sort each epoch's shuffled captions by length within runs of N batches, so a "
                                   "batch holds captions of about one length and less padding (every batch is cut "
                                   "to its longest caption either way); 1: plain shuffled batches. Where a "
                                   "caption's length follows its wording, as in the synthetic scenes' templates, "
                                   "batches of one length train worse")
    learning_rate: float = option(1e-3, "Adam's initial learning rate")
    embed_dim: int = option(256, "word embedding size E")
    hidden_dim: int = option(256, "LSTM size H (the image projection has the same size)")
    dropout: float = option(0.3, "dropout on image features and word embeddings")
    patience: int = option(4, "epochs without a better validation loss before stopping")
    lr_patience: int = option(1, "epochs without improvement before the learning rate is cut by --lr-factor")
    lr_factor: float = option(0.5, "what the learning rate is multiplied by on a plateau")
    min_learning_rate: float = option(1e-5, "the learning rate never falls below this")
    clipnorm: float = option(5.0, "each gradient is rescaled to at most this norm (Adam's clipnorm)")
    min_delta: float = option(1e-4, "smallest fall of the validation loss that counts as an improvement, for early "
                                    "stopping and the learning-rate halving")
    seed: int = option(0, "seed for initialisation, dropout and shuffling")
    strategy: str = option("default", "'mirrored' replicates the model on every GPU (or logical CPU) of this "
                                      "machine; 'multiworker' trains on several machines together "
                                      "(tf.distribute.MultiWorkerMirroredStrategy; the cluster comes from "
                                      "TF_CONFIG, --workers or --local-workers)",
                         choices=("default", "mirrored", "multiworker"))
    logical_cpus: int = option(0, "split the CPU into N logical devices (to try --strategy mirrored "
                                "without GPUs)")
    workers: str | None = option(None, "with --strategy multiworker: every worker's host:port, comma-separated, "
                                       "the same list on every worker (written to TF_CONFIG for you)")
    worker_index: int | None = option(None, "with --workers: which of them this process is; 0 is the chief, which "
                                            "writes the run's files")
    local_workers: int = option(0, "with --strategy multiworker: start N workers on this machine (127.0.0.1, free "
                                   "ports) and wait for them: to try multi-worker training on one machine")
    join_timeout: float = option(120.0, "with --strategy multiworker: seconds to wait for every worker to join "
                                        "before giving up with an error naming the ones that did not answer")
    resume: bool = option(False, "continue from the last completed epoch's checkpoint")
    fine_tune_top: bool = option(False, "train VGG16's fc1 and fc2 with the captioner, from the encoder's weights, "
                                      "on the block5_pool cache (`python -m train features --layer block5_pool`); "
                                      "each image passes through them once per step, not once per caption")
    top_learning_rate: float = option(1e-4, "with --fine-tune-top: fc1's and fc2's learning rate (halved with the "
                                            "rest on plateaus)")
    init_from: Path | None = option(None, "with --fine-tune-top: start the captioner's own layers from this trained "
                                         "frozen-feature model (e.g. this run's model.keras, read before training "
                                         "overwrites it), as Show and Tell fine-tuned its CNN after a first stage")


@dataclass
class EvaluateConfig:
    run: Path = option(DEFAULT_RUN, "run folder with a trained model.keras")
    beam: list[int] = option((1, 3, 5), "beam widths to score; 1 is greedy", nargs="+")
    split: str = option("test", "which split to caption", choices=("test", "val", "train"))
    # every generation option but the beam count (`--beam` lists the widths) and the captions listed (one scored)
    search: GenerationConfig = nested(GENERATION, skip=("num_beams", "num_return_sequences"))
    batch_size: int = option(64, "images searched together")
    samples: int = option(8, "sample captions stored beside the scores")
    seed: int = option(0, "seed of the shuffled-reference baseline")

    def generation(self, num_beams: int) -> GenerationConfig:
        """The search options of one of the scored widths."""
        return self.search.replace(num_beams=num_beams)
