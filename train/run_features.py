"""What a trained run's decoder sees and which VGG16 made it: the queries `fit`, `evaluate` and the export ask of a
run's feature caches (`train.feature_cache`)."""
from __future__ import annotations

import numpy as np

from demo.artifacts import read_json
from demo.errors import MissingFile
from train.calibrated_vgg16 import encoder_spec
from train.encoder import EncoderSpec, TopWeights, apply_top
from train.feature_cache import STAND_IN_PREFIX, CacheMismatch, cache_paths, config_section, load_cache
from train.run_files import RunFiles


def trained_layer(files: RunFiles) -> str:
    """The cache `fit` trained on: block5_pool when it fine-tuned fc1 and fc2 (recorded in config.json)."""
    fit_cfg = read_json(files.config, "run config").get("fit", {}) if files.config.is_file() else {}
    return "block5_pool" if fit_cfg.get("fine_tune_top") else "fc2"


def run_encoder_spec(files: RunFiles) -> EncoderSpec:
    """The VGG16 weights this run's feature cache was built with: export must rebuild exactly that network."""
    return encoder_spec_of(files, trained_layer(files))


def trained_features(files: RunFiles, image_ids: list[str], top: TopWeights | None) -> np.ndarray:
    """What the decoder sees for these images: their fc2 cache rows, or, for a run that fine-tuned fc1 and fc2
    (`top`, from `train.model.fine_tuned_top`), their block5_pool rows through the fine-tuned layers."""
    if top is None:
        return load_cache(files).lookup(image_ids)
    return apply_top(load_cache(files, layer="block5_pool").lookup(image_ids), top)


def encoder_spec_of(files: RunFiles, layer: str) -> EncoderSpec:
    """The VGG16 weights the run's `layer` cache was built with."""
    features_cfg = read_json(files.config, "run config").get(config_section(layer))
    if not features_cfg:
        raise MissingFile(f"{files.config} has no {config_section(layer)} section: run `python -m train features "
                          f"--layer {layer}` first")
    cached = read_json(cache_paths(files, layer)["meta"], "feature cache meta")["weights"]
    if str(cached).startswith(STAND_IN_PREFIX):
        raise CacheMismatch(f"the feature cache in {files.features_dir} holds stand-in features ({cached}), not "
                            "VGG16 fc2 features: no encoder made them, so none can be exported; export the decoder "
                            "alone (--decoder-only) or run `python -m train features --overwrite` on real images")
    spec = encoder_spec(files, features_cfg["vgg_weights"], int(features_cfg.get("seed", 0)))
    if spec.describe() != cached:
        raise CacheMismatch(f"the VGG16 weights named in {files.config} ({spec.describe()}) are not the ones the "
                            f"feature cache was built with ({cached}); re-run `python -m train features`")
    return spec
