"""Text normalisation and the vocabulary file: what the model is trained on and what users get back."""
import json

import pytest

from demo.text import normalize, tokenize
from demo.vocab import SPECIAL_TOKENS, Vocabulary, VocabularyError, build_vocabulary


def test_tokenize_lowercases_strips_punctuation_and_keeps_one_letter_words():
    assert tokenize("A dog's ball, on a T-shirt!") == ["a", "dogs", "ball", "on", "a", "t", "shirt"]
    assert tokenize("  Two   men\tplay .") == ["two", "men", "play"]
    assert tokenize("I don’t know") == ["i", "dont", "know"]
    assert tokenize(" ... ") == []
    assert normalize("A Girl, 3 dogs.") == "a girl 3 dogs"


def make_vocab(min_count=2, max_length=5):
    captions = [tokenize(c) for c in ["a dog runs", "a dog sits", "a cat sits", "the zebra"]]
    return build_vocabulary(captions, min_count=min_count, max_length=max_length)


def test_special_tokens_come_first_and_words_by_frequency():
    vocab, stats = make_vocab()
    assert vocab.tokens[:4] == SPECIAL_TOKENS
    assert vocab.pad_id == 0 and vocab.id_of("<start>") == 1 and vocab.id_of("<end>") == 2
    assert vocab.tokens[4:] == ("a", "dog", "sits")  # a:3, dog:2, sits:2 (alphabetical tie-break)
    assert stats.words_total == 7 and stats.words_kept == 3
    assert stats.tokens_unknown == 4  # runs, cat, the, zebra


def test_unknown_words_map_to_unk_and_round_trip(tmp_path):
    vocab, _ = make_vocab()
    ids = vocab.encode(["a", "purple", "dog"])
    assert ids == [1, vocab.id_of("a"), vocab.unk_id, vocab.id_of("dog"), 2]
    assert vocab.decode(ids) == ["a", "<unk>", "dog"]
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.encode(["a", "dog"]) == vocab.encode(["a", "dog"])
    assert json.loads(path.read_text())["tokens"][:4] == list(SPECIAL_TOKENS)


def test_decode_stops_at_end_and_skips_padding():
    vocab, _ = make_vocab()
    dog = vocab.id_of("dog")
    assert vocab.decode([1, dog, 0, dog, 2, dog, dog]) == ["dog", "dog"]


def test_truncation_to_max_length_is_counted():
    captions = [["a"] * 3, ["a"] * 8, ["a"] * 6]
    vocab, stats = build_vocabulary(captions, min_count=1, max_length=5)
    assert stats.captions_truncated == 2
    assert len(vocab.encode(["a"] * 8)) == 5 + 2


def test_max_size_caps_the_vocabulary_including_specials():
    vocab, _ = build_vocabulary([["x", "y", "z", "x", "y", "x"]], min_count=1, max_size=6)
    assert len(vocab) == 6 and vocab.tokens[4:] == ("x", "y")


def test_loading_a_vocabulary_of_the_wrong_size_names_both_sizes(tmp_path):
    vocab, _ = make_vocab()
    vocab.save(tmp_path / "vocab.json")
    with pytest.raises(VocabularyError, match=r"has 7 tokens but the model expects 9"):
        Vocabulary.load(tmp_path / "vocab.json", expected_size=9)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"format": "something else"}', "is not a"),
        ('{"format": "vgg16-lstm-captioner/vocab", "version": 1, "tokens": ["x"], "max_length": 3}',
         "must start with"),
        ('{"format": "vgg16-lstm-captioner/vocab", "version": 1, "max_length": 3}', "damaged"),
    ],
    ids=["missing", "corrupt", "foreign", "no-specials", "no-tokens"],
)
def test_bad_vocabulary_files_are_refused_with_the_path(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(VocabularyError, match=message) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)
