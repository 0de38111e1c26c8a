"""Greedy and beam search against a tiny numpy step model, checked by brute force."""
import itertools
import re

import numpy as np
import pytest

from demo.search.beam_search import beam_search
from demo.search.greedy_search import greedy_search
from demo.search.step import SearchOptions, TopKStep, normalized

START, END = 1, 2
BANNED = (0, START)


class TinyRNN:
    """A deterministic random RNN: every row is computed on its own, so batching cannot change a result."""

    def __init__(self, vocab_size: int = 6, hidden: int = 5, seed: int = 0, end_bias: float = 0.0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.embed = rng.normal(0, 1.5, (vocab_size, hidden))
        self.recur = rng.normal(0, 1.0, (hidden, hidden))
        self.image = rng.normal(0, 1.0, (3, hidden))
        self.out = rng.normal(0, 2.0, (hidden, vocab_size))
        self.bias = np.zeros(vocab_size)
        self.bias[END] = end_bias
        self.calls = []

    def initial_state(self, features):
        return {"h": np.tanh(features @ self.image)}

    def step(self, tokens, state):
        self.calls.append(len(tokens))
        h = np.stack([np.tanh(self.embed[t] + state["h"][r] @ self.recur) for r, t in enumerate(tokens)])
        logits = np.stack([row @ self.out + self.bias for row in h])
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return log_probs, {"h": h}


def top_k(model):
    """The searches read each row's best words: all of a tiny vocabulary, so the search is the exhaustive one."""
    return TopKStep(model, END, top_k=model.vocab_size)


def sequence_log_prob(model, feature, words, closed_with_end=True):
    state = model.initial_state(feature[None])
    total, previous = 0.0, START
    for token in list(words) + [END]:
        log_probs, state = model.step(np.array([previous]), state)
        log_probs[:, list(BANNED)] = -np.inf
        total += log_probs[0, token]
        previous = token
    return total


def brute_force_best(model, feature, options):
    """Every caption of 0..max_length words (closed by <end>), ranked by the same normalised score."""
    words_ids = [w for w in range(model.vocab_size) if w not in BANNED and w != END]
    best = None
    for length in range(options.max_length + 1):
        for words in itertools.product(words_ids, repeat=length):
            log_prob = sequence_log_prob(model, feature, words)
            score = normalized(log_prob, length, options.length_penalty)
            if best is None or score > best[0] + 1e-12:
                best = (score, words, log_prob)
    return best


def features(count=4, seed=1):
    return np.random.default_rng(seed).normal(size=(count, 3))


@pytest.mark.parametrize("alpha", [0.0, 0.7, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_beam_finds_the_true_best_caption(alpha, seed):
    model = TinyRNN(vocab_size=5, seed=seed)  # 2 real words: 2**4 live prefixes at most
    options = SearchOptions(max_length=4, num_beams=16, length_penalty=alpha, banned_ids=BANNED)
    image_features = features(3, seed)
    results = beam_search(top_k(model), image_features, START, END, options)
    for feature, (best,) in zip(image_features, results):
        score, words, log_prob = brute_force_best(model, feature, options)
        assert best.tokens == words
        assert best.score == pytest.approx(score) and best.log_prob == pytest.approx(log_prob)


@pytest.mark.parametrize("seed", range(5))
def test_beam_of_one_equals_greedy(seed):
    model = TinyRNN(seed=seed)
    options = SearchOptions(max_length=8, num_beams=1, length_penalty=0.0, banned_ids=BANNED)
    greedy = greedy_search(top_k(model), features(6, seed), START, END, options)
    beam = beam_search(top_k(model), features(6, seed), START, END, options)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g.log_prob for g in greedy] == pytest.approx([b[0].log_prob for b in beam])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(8))
def test_beam_never_scores_below_greedy(seed, alpha):
    model = TinyRNN(vocab_size=9, seed=seed, end_bias=-1.0)
    options = SearchOptions(max_length=10, num_beams=3, length_penalty=alpha, banned_ids=BANNED)
    image_features = features(8, seed)
    greedy = greedy_search(top_k(model), image_features, START, END, options)
    beam = beam_search(top_k(model), image_features, START, END, options)
    for g, (b,) in zip(greedy, beam):
        assert b.score >= g.score - 1e-9
        if alpha == 0.0:
            assert b.log_prob >= g.log_prob - 1e-9


def test_greedy_log_prob_is_the_sum_over_its_words():
    model = TinyRNN(seed=3)
    image_features = features(3)
    options = SearchOptions(max_length=6, banned_ids=BANNED)
    for feature, hyp in zip(image_features, greedy_search(top_k(model), image_features, START, END, options)):
        if hyp.finished:
            assert hyp.log_prob == pytest.approx(sequence_log_prob(model, feature, hyp.tokens))


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batching_images_gives_the_same_results_as_one_at_a_time(search):
    model = TinyRNN(vocab_size=8, seed=4)
    options = SearchOptions(max_length=7, num_beams=4, num_return_sequences=3, length_penalty=0.6,
                            banned_ids=BANNED)
    run = greedy_search if search == "greedy" else beam_search
    image_features = features(5, 9)
    batched = run(top_k(model), image_features, START, END, options)
    alone = [run(top_k(model), image_features[i:i + 1], START, END, options)[0] for i in range(5)]
    flat = (lambda results: results) if search == "beam" else (lambda results: [[h] for h in results])
    for batch_list, alone_list in zip(flat(batched), flat(alone)):
        assert [h.tokens for h in batch_list] == [h.tokens for h in alone_list]
        assert [h.score for h in batch_list] == pytest.approx([h.score for h in alone_list], rel=1e-12)


def test_all_beams_of_all_images_advance_in_one_call_per_step():
    model = TinyRNN(vocab_size=8, seed=5, end_bias=-3.0)  # rarely ends: runs to max_length
    options = SearchOptions(max_length=5, num_beams=3, banned_ids=BANNED)
    beam_search(top_k(model), features(4), START, END, options)
    assert len(model.calls) <= options.max_length + 1
    assert model.calls[0] == 4 * (3 + 1)  # k beams + the greedy shadow per image


def test_n_best_list_is_sorted_distinct_and_sized():
    model = TinyRNN(vocab_size=8, seed=6)
    options = SearchOptions(max_length=6, num_beams=5, num_return_sequences=4, banned_ids=BANNED)
    for n_best in beam_search(top_k(model), features(3), START, END, options):
        assert len(n_best) == 4
        assert [h.score for h in n_best] == sorted((h.score for h in n_best), reverse=True)
        assert len({h.tokens for h in n_best}) == 4


def test_max_length_caps_words_and_marks_forced_endings():
    model = TinyRNN(vocab_size=8, seed=7, end_bias=-50.0)  # never wants to end
    options = SearchOptions(max_length=3, num_beams=2, banned_ids=BANNED)
    (greedy,) = greedy_search(top_k(model), features(1), START, END, options)
    ((beam,),) = beam_search(top_k(model), features(1), START, END, options)
    for hyp in (greedy, beam):
        assert len(hyp.tokens) == 3 and hyp.finished is False


def test_banned_tokens_are_never_generated():
    model = TinyRNN(vocab_size=8, seed=8)
    options = SearchOptions(max_length=6, num_beams=3, num_return_sequences=3, banned_ids=(0, 1, 3, 4))
    for hyp in greedy_search(top_k(model), features(4), START, END, options):
        assert not set(hyp.tokens) & {0, 1, 3, 4}
    for n_best in beam_search(top_k(model), features(4), START, END, options):
        assert all(not set(h.tokens) & {0, 1, 3, 4} for h in n_best)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_beams": 0}, "num_beams must be at least 1"), ({"max_length": 0}, "max_length must be at least 1"),
    ({"length_penalty": -1}, "length_penalty must be >= 0"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences must be between 1 and num_beams"),
    ({"num_beams": 2, "num_return_sequences": 0}, "num_return_sequences must be between 1 and num_beams"),
])
def test_invalid_options_are_refused_naming_the_option(kwargs, message):
    """A CaptionerError (so the CLI prints one line, exit 2) that is also the ValueError a library caller expects."""
    from demo.errors import CaptionerError

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$") as info:
        SearchOptions(**kwargs)
    assert isinstance(info.value, CaptionerError)


def word_log_probs(model, feature, words):
    """Each word's and then <end>'s log-probability, stepping the model along the caption (banned words masked)."""
    state, previous, costs = model.initial_state(feature[None]), START, []
    for token in list(words) + [END]:
        log_probs, state = model.step(np.array([previous]), state)
        costs.append(log_probs[0, token])  # the model's own: banning words does not renormalise the rest
        previous = token
    return costs


@pytest.mark.parametrize("max_length", [3, 6])
@pytest.mark.parametrize("num_beams", [1, 2, 4])
def test_each_word_carries_its_own_log_prob_and_they_add_up_to_the_caption(num_beams, max_length):
    """Per-word confidence: what the page shades and the API returns. Each word's value is the model's
    log-probability of that word after the words before it (recomputed here by stepping the model along the
    caption), the last is <end>'s, and they add up, in order, to the caption's log-probability exactly;
    also for captions closed at max_length and for every n-best entry."""
    model = TinyRNN(vocab_size=7, seed=3, end_bias=-1.0)
    options = SearchOptions(max_length=max_length, num_beams=num_beams, num_return_sequences=num_beams,
                            banned_ids=BANNED)
    image_features = features(5, seed=4)
    found = ([[h] for h in greedy_search(top_k(model), image_features, START, END, options)] if num_beams == 1
             else beam_search(top_k(model), image_features, START, END, options))
    checked = 0
    for feature, n_best in zip(image_features, found):
        for hypothesis in n_best:
            assert len(hypothesis.word_log_probs) == len(hypothesis.tokens)
            assert sum(hypothesis.word_log_probs) + hypothesis.end_log_prob == hypothesis.log_prob
            expected = word_log_probs(model, feature, hypothesis.tokens)
            np.testing.assert_allclose([*hypothesis.word_log_probs, hypothesis.end_log_prob], expected, atol=1e-9)
            checked += 1
    assert checked >= len(image_features) * num_beams // 2


# no_repeat_ngram_size: Hugging Face's meaning, checked against captions enumerated and filtered by brute force


def repeats_an_ngram(words, n: int) -> bool:
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def brute_force_best_without_repeats(model, feature, options):
    """`brute_force_best` over the captions in which no n-gram of `no_repeat_ngram_size` words appears twice."""
    words_ids = [w for w in range(model.vocab_size) if w not in BANNED and w != END]
    best = None
    for length in range(options.max_length + 1):
        for words in itertools.product(words_ids, repeat=length):
            if repeats_an_ngram(words, options.no_repeat_ngram_size):
                continue
            log_prob = sequence_log_prob(model, feature, words)
            score = normalized(log_prob, length, options.length_penalty)
            if best is None or score > best[0] + 1e-12:
                best = (score, words, log_prob)
    return best


class EchoRNN(TinyRNN):
    """`TinyRNN` that likes to say its last word again: captions that repeat n-grams, for the ban to forbid."""

    def __init__(self, *args, echo: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.echo = echo

    def step(self, tokens, state):
        log_probs, state = super().step(tokens, state)
        log_probs[np.arange(len(tokens)), tokens] += self.echo
        return log_probs - np.log(np.exp(log_probs).sum(axis=1, keepdims=True)), state


# (vocabulary, max_length, a width that keeps every prefix, n); <end> made unlikely so that long captions win
@pytest.mark.parametrize("vocab_size, max_length, num_beams, n", [(6, 3, 27, 1), (6, 3, 27, 2), (5, 4, 16, 2),
                                                                   (5, 4, 16, 3)])
def test_exhaustive_beam_with_no_repeat_ngram_finds_the_best_caption_that_repeats_none(vocab_size, max_length,
                                                                                        num_beams, n):
    options = SearchOptions(max_length=max_length, num_beams=num_beams, length_penalty=0.7, banned_ids=BANNED,
                            no_repeat_ngram_size=n)
    plain_repeats = 0
    for seed in range(6):
        model = EchoRNN(vocab_size=vocab_size, seed=seed, end_bias=-20.0)
        image_features = features(3, seed)
        for feature, (best,) in zip(image_features, beam_search(top_k(model), image_features, START, END, options)):
            score, words, log_prob = brute_force_best_without_repeats(model, feature, options)
            assert best.tokens == words and not repeats_an_ngram(best.tokens, n)
            assert best.score == pytest.approx(score) and best.log_prob == pytest.approx(log_prob)
            plain_repeats += repeats_an_ngram(brute_force_best(model, feature, options)[1], n)
    assert plain_repeats, "no best caption without the ban repeats an n-gram: this test would not see it missing"


def greedy_without_repeats(model, feature, options) -> tuple[int, ...]:
    """Greedy by hand: each step the model's most likely word among those that complete no repeated n-gram."""
    words: list[int] = []
    for _ in range(options.max_length):
        state, previous = model.initial_state(feature[None]), START
        for token in words + [None]:
            log_probs, state = model.step(np.array([previous]), state)
            previous = token
        log_probs = log_probs[0].copy()
        log_probs[list(BANNED)] = -np.inf
        for word in range(model.vocab_size):
            if word != END and repeats_an_ngram(words + [word], options.no_repeat_ngram_size):
                log_probs[word] = -np.inf
        chosen = int(np.argmax(log_probs))
        if chosen == END:
            break
        words.append(chosen)
    return tuple(words)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_greedy_with_no_repeat_ngram_takes_the_best_word_that_repeats_nothing(n):
    options = SearchOptions(max_length=8, banned_ids=BANNED, no_repeat_ngram_size=n)
    plain = SearchOptions(max_length=8, banned_ids=BANNED)
    repeated = 0
    for seed in range(4):
        model = TinyRNN(vocab_size=7, seed=seed, end_bias=-3.0)
        image_features = features(5, seed)
        found = greedy_search(top_k(model), image_features, START, END, options)
        for feature, hypothesis in zip(image_features, found):
            assert hypothesis.tokens == greedy_without_repeats(model, feature, options)
        repeated += sum(repeats_an_ngram(h.tokens, n)
                        for h in greedy_search(top_k(model), image_features, START, END, plain))
    assert repeated, "no plain greedy caption repeated an n-gram: this test would not see a missing ban"


@pytest.mark.parametrize("num_beams", [1, 2])
def test_a_partial_top_k_searches_under_the_ban_as_the_whole_vocabulary_does(num_beams):
    """The rows' top-K less the banned words still holds every word the search can pick: a K that leaves 2k words
    after the most a row can lose (one per earlier word) finds what the whole vocabulary finds."""
    model = TinyRNN(vocab_size=12, seed=11, end_bias=-3.0)
    options = SearchOptions(max_length=6, num_beams=num_beams, num_return_sequences=num_beams, banned_ids=BANNED,
                            no_repeat_ngram_size=1)
    partial = TopKStep(model, END, top_k=2 * num_beams + options.max_length)
    assert partial.top_k < model.vocab_size
    search = greedy_search if num_beams == 1 else beam_search
    got, want = (search(step, features(6, 2), START, END, options) for step in (partial, top_k(model)))
    assert repr(got) == repr(want)


class Parrot:
    """A step model that always likes word 3 best, then 4, 5, ...: with no word allowed twice, its top-1 is banned."""

    vocab_size = 8

    def initial_state(self, features):
        return {"rows": np.zeros(len(features))}

    def step(self, tokens, state):
        logits = -np.arange(self.vocab_size, dtype=np.float64)[None].repeat(len(tokens), axis=0)
        logits[:, 3:] += 10.0
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)), {"rows": state["rows"][:len(tokens)]}


def test_a_ban_that_takes_a_rows_whole_top_k_is_refused_with_the_fix():
    from demo.errors import BadInput

    options = SearchOptions(max_length=4, banned_ids=BANNED, no_repeat_ngram_size=1)
    with pytest.raises(BadInput, match=r"no_repeat_ngram_size 1 took 1 of a row's 1 best words.*--top-k 2"):
        greedy_search(TopKStep(Parrot(), END, top_k=1), features(1), START, END, options)
    (found,) = greedy_search(TopKStep(Parrot(), END, top_k=8), features(1), START, END, options)
    assert found.tokens == (3, 4, 5, 6)


def test_generation_config_refuses_what_the_search_cannot_do_naming_the_option():
    from demo.errors import BadInput
    from demo.generation import GenerationConfig

    with pytest.raises(BadInput, match=r"^no_repeat_ngram_size must be >= 0"):
        GenerationConfig(no_repeat_ngram_size=-1)
    with pytest.raises(BadInput, match=r"unknown generation option num_beam \(options: num_beams, max_length"):
        GenerationConfig().replace(num_beam=3)
    assert GenerationConfig.from_dict(GenerationConfig(num_beams=4).to_dict()) == GenerationConfig(num_beams=4)
    # fewer beams than a config lists, with no count given, lists them all; a count above the width is refused
    listing = GenerationConfig(num_beams=3, num_return_sequences=3)
    assert listing.replace(num_beams=2).num_return_sequences == 2
    with pytest.raises(BadInput, match="num_return_sequences must be between 1 and num_beams"):
        listing.replace(num_beams=2, num_return_sequences=3)
