"""The paper's span filter (simscale.data.span_filter), rule by rule, against a literal port and on real
text."""
import random

import numpy as np
import pytest

from simscale.data.span_filter import FilterParams, SpanFilter, Stats, simplify_documents, tokenize
import reference_filter  # tests/reference_filter.py (pytest puts tests/ on sys.path)

VOCAB = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "i", "it", "is", "s"}
W = "the cat sat on a mat and the dog ran"  # 10 in-vocabulary words


def words(n: int) -> str:
    return " ".join((W.split() * (n // 10 + 1))[:n])


def kept(text, **kw):
    return [s for s, _, _ in SpanFilter(VOCAB, FilterParams(**kw)).spans(text)]


def test_tokens_split_on_delimiters_and_digit_boundaries():
    assert tokenize("Hi, ab12cd (x)") == ["Hi", ",", " ", "ab", "12", "cd", " ", "(", "x", ")"]
    assert tokenize("a\tb\nc") == ["a", "\t", "b", "\n", "c"]


def test_tokens_only_ascii_is_special():
    # a curly apostrophe, an accented letter and a non-ASCII digit stay inside their word
    assert tokenize("don’t café ٣x") == ["don’t", " ", "café", " ", "٣x"]


def test_tokens_keep_the_reference_glue_after_digits():
    # the C++ starts a new token at the delimiter after a digit and appends the next word to it
    assert tokenize("3 cats") == ["3", " cats"]
    assert tokenize("5.x, 1-2") == ["5", ".x", ",", " ", "1", "-", "2"]


def test_more_than_min_span_len_words_needed_at_end_of_text():
    assert kept(words(32)) == []
    assert kept(words(33)) == [words(33)]


def test_span_closed_by_an_oov_word_counts_that_word():
    # 32 vocabulary words then an OOV word: 33 words counted, the OOV word is not kept
    assert kept(words(32) + " zebra") == [words(32)]
    assert kept(words(31) + " zebra") == []


def test_oov_tolerance_in_float32():
    # 1 OOV in 100 words: 1/100 <= 0.01 keeps it; at word 99 it closes the span
    text = words(99) + " zebra " + words(10)
    assert kept(text) == [text]
    assert kept(words(98) + " zebra " + words(10)) == [words(98)]
    # 2 OOVs need 200 words
    two = words(99) + " zebra " + words(99) + " yak " + words(5)
    assert kept(two) == [two]
    assert kept(words(99) + " zebra " + words(98) + " yak") == [words(99) + " zebra " + words(98)]


def test_float32_not_float64_decides_the_boundary():
    # 3/300 is exactly at the limit in float32 (0.01f), and 0.01 in float64 differs from 0.01f
    f = SpanFilter(VOCAB, FilterParams(max_oov_p=0.01))
    assert f._oov_ok(3, 300) and not f._oov_ok(3, 299)
    assert np.float32(3) / np.float32(300) <= np.float32(0.01)


def test_new_spans_start_only_at_sentence_starts():
    after_oov = "zebra " + words(40)
    assert kept(after_oov) == []
    assert kept("zebra. " + words(40)) == [words(40)]
    assert kept("zebra\n" + words(40)) == [words(40)]
    assert kept("zebra? " + words(40) + "! " + words(40)) == [words(40) + "! " + words(40)]
    assert kept(after_oov, from_sentence_start=False) == [words(40)]


def test_case_insensitive_and_digits_always_allowed():
    text = "The CAT sat 42, 7, " + words(30)  # (after "42 " a word would glue to the space)
    assert kept(text) == [text]


def test_contractions_split_at_the_apostrophe():
    assert kept(words(40) + " it's " + words(5)) == [words(40) + " it's " + words(5)]  # "s" is a word
    assert kept(words(40) + " isn't " + words(5)) == [words(40)]  # "isn" is OOV


def test_trailing_spaces_and_newlines_are_removed():
    assert kept(words(33) + " \n\n ") == [words(33)]
    assert kept(words(40) + ". \n zebra") == [words(40) + "."]


def test_documents_wrap_spans_and_count():
    f = SpanFilter(VOCAB)
    text, stats = f.document(words(40) + ". zebra. " + words(35))
    assert text == f"<s> {words(40)}. </s> <s> {words(35)} </s>"
    assert (stats.spans, stats.words_in, stats.words_kept, stats.documents_out) == (2, 76, 75, 1)
    assert f.document("zebra yak")[0] == ""


def test_matches_the_literal_reference_port_on_random_text():
    rng = random.Random(0)
    pieces = list(VOCAB) + ["zebra", "Yak", "12", "3", "x1y", "ca’t", " ", " ", " ", "\n", ".", "?", "!",
                            ",", "'", "-", "(", "\t", "\r"]
    for params in [FilterParams(), FilterParams(5, 0.2, True), FilterParams(3, 0.3, False)]:
        f = SpanFilter(VOCAB, params)
        for _ in range(300):
            text = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 200)))
            ref = reference_filter.filter_vocab(text, VOCAB, params.min_span_len, params.max_oov_p,
                                                params.from_sentence_start)
            assert [s for s, _, _ in f.spans(text)] == [s for s, _, _ in ref], text
            assert tokenize(text) == reference_filter.tokenize(text)


def test_parallel_equals_single_process():
    docs = [words(n) + (" zebra. " if n % 3 else ". ") + words(40) for n in range(0, 80, 7)]
    single = list(simplify_documents(docs, VOCAB, workers=1))
    parallel = list(simplify_documents(docs, VOCAB, workers=2, chunk=3))
    assert [t for t, _ in single] == [t for t, _ in parallel]
    assert Stats(**{}).as_dict()["kept_fraction"] == 0.0


@pytest.fixture(scope="module")
def aochildes_filter(shared_data):
    from simscale.data.vocab import load_vocabulary

    return SpanFilter(load_vocabulary(shared_data / "vocab" / "AOChildes_word_frequency.csv").words)


def test_child_directed_speech_is_mostly_kept(shared_data, aochildes_filter):
    lines = (shared_data / "aochildes" / "child_directed_utterances.txt").read_text().splitlines()[:20000]
    stats = Stats()
    for i in range(0, len(lines), 100):  # 100 consecutive utterances make a document
        stats.add(aochildes_filter.document("\n".join(lines[i:i + 100]))[1])
    # Contractions ("ll", "didn"), names and transcription codes end spans, so not all of it.
    assert stats.documents_out / stats.documents_in > 0.9
    assert stats.as_dict()["kept_fraction"] > 0.4


def test_adult_text_is_mostly_dropped(aochildes_filter):
    adult = ("The committee's quarterly assessment indicated substantial discrepancies between projected "
             "expenditures and the municipality's audited financial statements, prompting an independent "
             "review. Consequently, administrators postponed infrastructure investments pending "
             "clarification from regional authorities and external consultants. ") * 20
    text, stats = aochildes_filter.document(adult)
    assert text == "" and stats.words_kept == 0
