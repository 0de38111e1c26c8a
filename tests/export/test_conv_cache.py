"""The export's cache of VGG16's converted conv part (`export.conv_cache`): reused only for the same key and the
same bytes. Fast: real files, no conversion (the export gates reuse the shared build's entry through the export)."""
from pathlib import Path

from export import conv_cache
from train.encoder import EncoderSpec


def stored(run: Path, key: dict) -> Path:
    converted = run / "converted.onnx"
    converted.write_bytes(b"a converted graph")
    conv_cache.store(run, key, converted)
    return run / conv_cache.CACHE_DIR / conv_cache.ONNX_FILE


def test_the_same_weights_and_tools_reuse_the_conversion(tmp_path):
    key = conv_cache.cache_key(EncoderSpec("none", seed=0), opset=17)
    stored(tmp_path, key)
    assert conv_cache.reuse(tmp_path, key, tmp_path / "work.onnx")
    assert (tmp_path / "work.onnx").read_bytes() == b"a converted graph"


def test_other_weights_another_opset_or_changed_bytes_convert_again(tmp_path):
    key = conv_cache.cache_key(EncoderSpec("none", seed=0), opset=17)
    cached = stored(tmp_path, key)
    assert "tf2onnx" in key["tools"] and key["preprocess"]
    for other in (conv_cache.cache_key(EncoderSpec("none", seed=1), opset=17),
                  conv_cache.cache_key(EncoderSpec("none", seed=0), opset=18)):
        assert not conv_cache.reuse(tmp_path, other, tmp_path / "work.onnx")
    cached.write_bytes(b"a damaged graph")
    assert not conv_cache.reuse(tmp_path, key, tmp_path / "work.onnx")
    assert not (tmp_path / "work.onnx").exists()


def test_nothing_cached_means_converting(tmp_path):
    assert not conv_cache.reuse(tmp_path, conv_cache.cache_key(EncoderSpec("none"), 17), tmp_path / "work.onnx")
