"""A complete feature cache from features computed elsewhere: how the Flickr-scale benchmark model
(`bench.flickr_scale_model`) stores its stand-in features, in the files and format `train.features` writes."""
from __future__ import annotations

import numpy as np

from demo.artifacts import atomic_write_json
from train.encoder import FEATURE_LAYERS
from train.feature_cache import (
    FeatureCache,
    cache_paths,
    expected_meta,
    load_cache,
    row_writer,
    run_image_list,
    start_cache,
)
from train.feature_shards import CacheLock, save_done
from train.run_files import RunFiles


def write_complete_cache(files: RunFiles, features: np.ndarray, weights: str, batch_size: int = 16,
                         layer: str = "fc2") -> FeatureCache:
    """Store features computed elsewhere as a complete cache, rows in captions.json order.

    For stand-in features (`weights` starting with `STAND_IN_PREFIX`): the same files, meta and checks as
    an extracted cache, so `fit` and `evaluate` read it unchanged.
    """
    paths = cache_paths(files, layer)
    _, image_ids = run_image_list(files)
    shape = (len(image_ids), FEATURE_LAYERS[layer])
    if features.shape != shape:
        raise ValueError(f"features of shape {features.shape}, expected {shape}")
    with CacheLock(files.features_dir) as lock, lock.exclusive():
        meta = start_cache(paths, expected_meta(weights, image_ids, batch_size, layer), image_ids)
        with row_writer(paths["array"], shape) as writer:
            writer.write(0, features)
        save_done(paths["done"], np.ones(-(-len(image_ids) // batch_size), dtype=bool))
        atomic_write_json(paths["meta"], meta | {"complete": True})
    return load_cache(files, layer=layer)
