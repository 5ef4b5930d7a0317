"""TemporalWiki data: the shipped probes, the context pool, the document builder and the diffset reader.

python3 -m pytest -q tests/test_twiki_data.py

No model is loaded: documents are built from all four periods' changed facts in well under a second.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from taalm.bench import twiki_data as tw
from taalm.bench.twiki_data import Fact
from taalm.errors import TaalmError

ROWS = {"0801-0901": (1776, 6935), "0901-1001": (1732, 7090), "1001-1101": (1108, 7063), "1101-1201": (1701, 7043)}
WORDING = ("guess the object", "subject is", "relation is", "object is")


@pytest.fixture(scope="module")
def changed() -> dict[str, list[Fact]]:
    return {period: tw.load_facts(tw.probe_file(period, "changed")) for period in tw.PERIODS}


@pytest.fixture(scope="module")
def pool(changed) -> list[str]:
    """The pool a run uses: no paragraph that could state any evaluated fact (changed or unchanged, all periods)."""
    unchanged = [f for p in tw.PERIODS for f in tw.load_facts(tw.probe_file(p, "unchanged"))]
    return tw.context_pool(exclude_facts=[f for facts in changed.values() for f in facts] + unchanged)


@pytest.fixture(scope="module")
def built(changed, pool) -> dict[str, list[tw.BuiltDocument]]:
    start = time.perf_counter()
    docs = {period: tw.build_documents(facts, pool, seed=0) for period, facts in changed.items()}
    assert time.perf_counter() - start < 20  # ~0.3 s here; a quadratic builder would blow far past this
    return docs


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(TaalmError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------- probes


@pytest.mark.parametrize("period", tw.PERIODS)
def test_shipped_probes_load_with_their_row_counts(period):
    for kind, rows in zip(tw.KINDS, ROWS[period], strict=True):
        facts = tw.load_facts(tw.probe_file(period, kind))
        assert len(facts) == rows
        assert facts[0].source == f"{period}_{kind}.jsonl.gz:1"
        assert facts[-1].source == f"{period}_{kind}.jsonl.gz:{rows}"


def test_shipped_probes_match_the_hashes_in_source_md():
    directory = tw.probe_file(tw.PHI_PERIOD, "changed").parent
    listed = dict(re.findall(r"`(\S+\.jsonl)` \| \d+ \| `([0-9a-f]{64})`", (directory / "SOURCE.md").read_text()))
    assert len(listed) == 8
    for name, digest in listed.items():
        data = gzip.decompress((directory / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert (directory / f"{name}.gz").read_bytes()[4:8] == b"\0\0\0\0"  # mtime 0: byte-identical rebuilds


def test_periods_split_meta_training_from_learning():
    assert tw.LEARN_PERIODS == ("0901-1001", "1001-1101", "1101-1201")
    assert tw.PHI_PERIOD not in tw.LEARN_PERIODS


def test_unknown_period_or_kind_is_refused():
    message = error_of(tw.probe_file, "0701-0801", "changed")
    assert "0701-0801" in message and all(p in message for p in tw.PERIODS)
    assert "changed, unchanged" in error_of(tw.probe_file, "0901-1001", "new")
    assert "0701-0801" in error_of(tw.load_diffsets, "/nowhere", "0701-0801")


def test_probe_file_reads_a_data_dir(tmp_path):
    write_lines(tmp_path / "1001-1101_unchanged.jsonl", ['{"subject": "a", "relation": "b", "object": "c"}'])
    path = tw.probe_file("1001-1101", "unchanged", str(tmp_path))
    assert tw.load_facts(path) == [Fact("a", "b", "c", "1001-1101_unchanged.jsonl:1")]
    assert error_of(tw.load_facts, tmp_path / "0901-1001_changed.jsonl").endswith("file not found")


@pytest.mark.parametrize("row, expected", [
    ('{"subject": "a", "object": "c"}', "missing field 'relation'"),
    ('{"subject": "a", "relation": "b", "object": "  "}', "field 'object' must be a non-empty string"),
    ('{"subject": 3, "relation": "b", "object": "c"}', "field 'subject' must be a non-empty string"),
    ('{"subject": "a", "relation": "b", "object": "c"', "malformed JSON"),
])
def test_bad_probe_rows_name_file_and_line(tmp_path, row, expected):
    good = '{"subject": "a", "relation": "b", "object": "c"}'
    path = write_lines(tmp_path / "probes.jsonl", [good, "", row])
    message = error_of(tw.load_facts, path)
    assert message.startswith(f"{path}:3: ") and expected in message


def test_probe_record_is_the_official_template():
    record = tw.probe_record(Fact("Jan Oblak", "member of sports team", "Atlético Madrid"))
    assert record == {"task": "Guess the object. \n  subject is Jan Oblak , relation is member of sports team , "
                              "object is Atlético Madrid", "answer": "Atlético Madrid"}


def test_select_subset_is_seeded_and_keeps_file_order(changed):
    facts = changed["0901-1001"]
    subset = tw.select_subset(facts, 50, seed=1)
    assert len(subset) == 50 and subset == tw.select_subset(facts, 50, seed=1)
    assert subset != tw.select_subset(facts, 50, seed=2)
    assert [facts.index(f) for f in subset] == sorted(facts.index(f) for f in subset)
    assert tw.select_subset(facts, 0, seed=1) == facts


def test_select_subjects_keeps_every_fact_of_a_chosen_subject(changed):
    facts = changed["0901-1001"]
    subset = tw.select_subjects(facts, 40, seed=3)
    chosen = {f.subject for f in subset}
    assert len(chosen) == 40
    assert subset == [f for f in facts if f.subject in chosen]  # all of them, in file order
    assert len(subset) > 40  # some chosen subjects have several facts
    assert tw.select_subjects(facts, 0, seed=3) == facts
    assert "must be >= 0" in error_of(tw.select_subjects, facts, -1, 3)


# ---------------------------------------------------------------------------------------------------- context pool


def test_pool_paragraphs_pass_the_filters():
    pool = tw.context_pool()
    assert len(pool) > 1000 and len(pool) == len(set(pool))
    assert all(len(p) <= tw.MAX_PARAGRAPH and tw.passes_filter(p) and not tw.has_probe_wording(p) for p in pool)
    assert tw.context_pool() == pool  # deterministic order


def test_long_paragraphs_are_cut_at_a_sentence_boundary():
    text = " ".join(f"Sentence number {i} is about the river bank and a quick brown fox nearby." for i in range(12))
    cut = tw._cut(text)
    assert len(text) > 600 and 500 < len(cut) <= 600
    assert text.startswith(cut) and cut.endswith("nearby.")
    assert tw._cut("word " * 200) is None  # one sentence longer than 600 characters: nothing to keep


def test_pool_drops_every_excluded_string_as_a_whole_word(changed):
    facts = changed["0901-1001"]
    exclude = sorted({s for f in facts for s in (f.subject, f.object)})
    pool, full = tw.context_pool(exclude), tw.context_pool()
    assert 0 < len(pool) < len(full) // 4  # the objects include common words: most paragraphs go
    kept = [s.lower() for s in exclude if len(s) >= tw.MIN_EXCLUDE]

    def mentions(paragraph: str) -> list[str]:  # whole-word, case-insensitive; substring first for speed
        text = paragraph.lower()
        return [s for s in kept if s in text and re.search(rf"(?<!\w){re.escape(s)}(?!\w)", text)]

    assert not [p for p in pool if mentions(p)]
    assert sum(bool(mentions(p)) for p in full[:100]) > 50  # the check above can fail


def test_pool_drops_paragraphs_that_may_state_an_excluded_fact():
    full = tw.context_pool()
    words = sorted(set(re.findall(r"[A-Za-z]{6,}", full[0])), key=lambda w: (-len(w), w))
    first, second = words[0], words[1]
    assert full[0] not in tw.context_pool(exclude_facts=[Fact(first.lower(), "r", second.upper())])
    assert full[0] in tw.context_pool(exclude_facts=[Fact(first, "r", "Qzxvwq Plorb")])  # only one end: kept


def test_pool_exclusion_is_fast():
    facts = [f for p in tw.PERIODS for kind in tw.KINDS for f in tw.load_facts(tw.probe_file(p, kind))]
    exclude = list({s for f in facts for s in (f.subject, f.object)})
    assert len(exclude) > 10_000
    start = time.perf_counter()
    tw.context_pool(exclude, exclude_facts=facts)
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------------------------------- documents


def test_one_document_per_subject_in_first_appearance_order(changed, built):
    for period, docs in built.items():
        subjects = list(dict.fromkeys(f.subject for f in changed[period]))
        assert [d.subject for d in docs] == subjects
        assert [f for d in docs for f in d.facts] == sorted(changed[period], key=lambda f: subjects.index(f.subject))


def test_every_subject_and_object_is_stated_in_its_document(built):
    for docs in built.values():
        for doc in docs:
            assert doc.text.startswith(doc.subject + "\n\n")
            statement = doc.text[slice(*doc.fact_span)]  # the fact sentences, not the context around them
            assert statement == doc.statement and statement in doc.text.split("\n\n")
            assert all(f.subject == doc.subject and f.object in statement for f in doc.facts)


def test_documents_never_use_the_probe_wording(changed, built):
    texts = [doc.text.lower() for docs in built.values() for doc in docs]
    assert len(texts) == sum(len({f.subject for f in facts}) for facts in changed.values()) > 4000
    assert not [t for t in texts if any(w in t for w in WORDING)]


def test_facts_are_a_minority_of_every_document(built, pool):
    docs = [doc for docs in built.values() for doc in docs]
    for doc in docs:
        assert doc.fact_share <= tw.MAX_FACT_SHARE
        paragraphs = [p for p in doc.text.split("\n\n")[1:] if p != doc.statement]
        assert paragraphs == list(doc.context) and doc.context_chars == sum(map(len, paragraphs))
        assert all(any(p == q or q.startswith(p) for q in pool) for p in paragraphs)  # only pool text (or its head)
    lengths = sorted(len(doc.text) for doc in docs)
    assert lengths[int(0.99 * len(lengths))] <= tw.MAX_DOCUMENT


def test_fact_sentences_take_every_slot_with_no_place_dominant(built):
    """Builder v2: the fact sentences' place carries no information about them."""
    docs = [doc for docs in built.values() for doc in docs]
    places = collections.Counter(doc.fact_place for doc in docs)
    assert set(places) == {"first", "middle", "last"}  # every kind of place occurs
    assert max(places["first"], places["last"]) < 0.6 * len(docs)  # no place dominates (v1: all "first")
    relative = [doc.fact_slot / len(doc.context) for doc in docs]
    assert abs(sum(relative) / len(relative) - 0.5) < 0.05  # centred: as often early as late
    for n_context in {len(doc.context) for doc in docs}:  # per context size, each slot drawn about equally often
        slots = collections.Counter(doc.fact_slot for doc in docs if len(doc.context) == n_context)
        if sum(slots.values()) >= 200:
            expected = sum(slots.values()) / (n_context + 1)
            assert len(slots) == n_context + 1 and all(abs(c - expected) < 0.15 * expected for c in slots.values())


def test_fact_spans_match_the_text_and_moving_keeps_everything_else(built):
    for doc in built["1001-1101"][:200]:
        start, end = doc.fact_span
        assert doc.text[start:end] == doc.statement
        assert doc.text[:start].endswith("\n\n") and (end == len(doc.text) or doc.text[end:].startswith("\n\n"))
        for slot in range(doc.slots):
            moved = doc.placed(slot)
            assert moved.fact_slot == slot and moved.text[slice(*moved.fact_span)] == doc.statement
            assert sorted(moved.text.split("\n\n")) == sorted(doc.text.split("\n\n"))  # the same paragraphs
            assert moved.context == doc.context and len(moved.text) == len(doc.text)
        assert doc.placed(-1).fact_place == "last" and doc.placed(0).fact_place == "first"
        assert doc.placed(doc.fact_slot) == doc
    with pytest.raises(ValueError):
        doc.placed(doc.slots)


def test_document_records_locate_the_facts(built):
    for doc in built["0901-1001"][:50]:
        record = tw.document_record(doc)
        assert record["text"][slice(*record["fact_span"])] == doc.statement
        assert (record["fact_slot"], record["slots"], record["subject"]) == (doc.fact_slot, doc.slots, doc.subject)
        assert json.loads(json.dumps(record)) == record


def test_builder_is_deterministic_and_seed_sensitive(changed, pool):
    facts = tw.select_subjects(changed["1001-1101"], 60, seed=0)
    first, again = tw.build_documents(facts, pool, seed=5), tw.build_documents(facts, pool, seed=5)
    other = tw.build_documents(facts, pool, seed=6)
    assert [d.text for d in first] == [d.text for d in again]
    changed_docs = sum(a.text != b.text for a, b in zip(first, other, strict=True))
    assert changed_docs > 50
    statements = [[d.statement for d in docs] for docs in (first, other)]
    assert statements[0] != statements[1]  # the phrasings change too, not only the context
    assert [d.fact_slot for d in first] == [d.fact_slot for d in again]
    assert [d.fact_slot for d in first] != [d.fact_slot for d in other]  # and the places
    assert tw.provenance(facts, first, 5)["sha256"] == tw.provenance(facts, again, 5)["sha256"]
    assert tw.provenance(facts, first, 5)["sha256"] != tw.provenance(facts, other, 6)["sha256"]


def test_objects_of_one_relation_are_listed_together():
    facts = [Fact("Kool & The Gang", "has part", name) for name in ("Ronald Bell", "Robert Bell", "Dennis Thomas")]
    facts.insert(1, Fact("Kool & The Gang", "genre", "funk"))
    (doc,) = tw.build_documents(facts, ["A short paragraph about a river bank and a quick brown fox, nothing more."],
                                seed=0)
    assert "Ronald Bell, Robert Bell and Dennis Thomas" in doc.text
    assert doc.facts == tuple(facts)
    assert doc.text.count("Kool & The Gang") == 3  # the title and one sentence per relation
    assert doc.fact_share <= tw.MAX_FACT_SHARE  # the one-paragraph pool was repeated to get there
    assert doc.text.count("river bank") >= 2


def test_a_phrasing_with_the_probe_wording_is_skipped():
    fact = Fact("unidentified flying object", "instance of", "aerial phenomenon")
    own = [p.format_map({"s": fact.subject, "o": fact.object}) for p in tw.TEMPLATES["instance of"]]
    assert all(tw.has_probe_wording(s) for s in own)  # every "instance of" phrasing says "object is"
    sentences = {tw.fact_sentence(fact.subject, fact.relation, [fact.object], tw.random.Random(s)) for s in range(30)}
    assert len(sentences) >= 2
    assert all(fact.subject in s and fact.object in s and not tw.has_probe_wording(s) for s in sentences)
    bad = Fact("Nagpur", "motto", "the subject is the river")
    assert "probe's wording" in error_of(tw.build_documents, [bad], ["x" * 60], seed=0)


def test_frequent_relations_have_their_own_phrasings(changed):
    counts = collections.Counter(f.relation for facts in changed.values() for f in facts)
    assert all(relation in tw.TEMPLATES for relation, _ in counts.most_common(40))
    assert all(len(phrasings) >= 2 for phrasings in tw.TEMPLATES.values())
    assert sum(counts[r] for r in tw.TEMPLATES) / sum(counts.values()) > 0.8
    for relation, phrasings in tw.TEMPLATES.items():
        for phrasing in phrasings:
            one = phrasing.format_map({"s": "S", "o": "O", "is": "is", "was": "was", "pl": "", "relation": relation})
            assert "S" in one and "O" in one and not tw.has_probe_wording(one), phrasing


def _frames(templates: dict[str, tuple[str, ...]], generic: tuple[str, ...], fallback: str,
            relation: str) -> set[str]:
    """A relation's phrasings with the relation named, the rest left as slots: what a sentence shares besides the fact."""
    return {t.replace("{relation}", relation) for t in (*templates.get(relation, ()), *generic, fallback)}


def test_phis_own_wording_shares_no_phrasing_with_the_evaluated_documents(changed, pool, built):
    relations = {f.relation for facts in changed.values() for f in facts}
    test_side = set().union(*(_frames(*tw.WORDINGS["shared"], r) for r in relations | set(tw.TEMPLATES)))
    for relation in relations | set(tw.PHI_TEMPLATES):
        assert not _frames(*tw.WORDINGS["own"], relation) & test_side, relation
    phi_period = changed[tw.PHI_PERIOD]
    assert sum(f.relation in tw.PHI_TEMPLATES for f in phi_period) / len(phi_period) > 0.5  # the frequent ones
    for relation, phrasings in tw.PHI_TEMPLATES.items():
        assert len(set(phrasings)) >= 2, relation
        for phrasing in phrasings:  # every phrasing can be written
            one = phrasing.format_map({"s": "S", "o": "O", "is": "is", "was": "was", "pl": "", "relation": relation})
            assert "S" in one and "O" in one and not tw.has_probe_wording(one), phrasing
    own = tw.build_documents(phi_period, pool, seed=0, wording="own")
    assert own == tw.build_documents(phi_period, pool, seed=0, wording="own")  # deterministic
    assert [(d.subject, d.facts) for d in own] == [(d.subject, d.facts) for d in built[tw.PHI_PERIOD]]
    assert all(f.subject in d.statement and f.object in d.statement and not tw.has_probe_wording(d.text)
               for d in own for f in d.facts)
    evaluated = {s for p, docs in built.items() if p != tw.PHI_PERIOD for d in docs for s in _sentences(d)}
    assert not {s for d in own for s in _sentences(d)} & evaluated


def _sentences(doc: tw.BuiltDocument) -> set[str]:
    """The fact sentences (the pieces naming the subject: a split at "U.S. " leaves pieces that do not)."""
    return {s for s in re.split(r"(?<=\.) (?=[A-Z])", doc.statement) if doc.subject in s}


def test_meta_pairs_pair_each_fact_with_its_probe(built):
    docs = built[tw.PHI_PERIOD]
    pairs = tw.meta_pairs(docs)
    assert len(pairs) == ROWS[tw.PHI_PERIOD][0]
    fact_of = [(doc, fact) for doc in docs for fact in doc.facts]
    for pair, (doc, fact) in zip(pairs, fact_of, strict=True):
        assert pair["document"] == doc.text and pair["answer"] == fact.object
        assert pair["task"] == tw.PROBE_TEMPLATE.format(subject=fact.subject, relation=fact.relation,
                                                        object=fact.object)
        assert pair["task"].endswith(pair["answer"]) and pair["answer"] in pair["document"]


def test_provenance_counts_the_build(changed, built):
    record = tw.provenance(changed["1001-1101"], built["1001-1101"], seed=0)
    docs = built["1001-1101"]
    assert record["builder_version"] == tw.BUILDER_VERSION and record["seed"] == 0
    assert record["facts"] == 1108 and record["documents"] == record["subjects"] == len(docs) < 1108
    assert record["characters"] == sum(len(d.text) for d in docs)
    assert 0.05 < record["mean_fact_share"] < record["max_fact_share"] <= tw.MAX_FACT_SHARE
    assert record["builder_version"] == "3"
    assert record["fact_places"] == dict(collections.Counter(d.fact_place for d in docs))
    assert sum(record["fact_places"].values()) == len(docs) and 0.4 < record["mean_relative_slot"] < 0.6
    json.dumps(record)  # goes into run records as is


# ---------------------------------------------------------------------------------------------------- diffsets


def test_load_diffsets_applies_the_official_filter(tmp_path, caplog):
    good = "The river bank was rebuilt in 2021 after a flood destroyed the old stone wall near the bridge."
    rows = [{"text": good}, {"text": "Too short to keep."}, {"text": "1234 5678 9012 " * 6 + "ab"},
            {"text": good.upper()}]
    write_lines(tmp_path / "0901-1001.jsonl", [json.dumps(r) for r in rows])
    assert tw.read_diffset(tmp_path / "0901-1001.jsonl") == ([good, good.upper()], 2)
    with caplog.at_level("INFO", logger="taalm"):
        assert tw.load_diffsets(tmp_path, "0901-1001") == [good, good.upper()]
    assert "2 dropped" in caplog.text


def test_load_diffsets_accepts_the_short_name(tmp_path):
    text = "Wikipedia paragraph with enough letters to pass the official diffset filter easily."
    write_lines(tmp_path / "diffset_0910.jsonl", [json.dumps({"text": text})])
    assert tw.load_diffsets(tmp_path, "0901-1001") == [text]


@pytest.mark.parametrize("row, expected", [
    ('{"text": "unfinished', "malformed JSON"),
    ('{"body": "no text field here"}', "missing string field 'text'"),
    ('{"text": 17}', "missing string field 'text'"),
])
def test_malformed_diffset_rows_name_file_and_line(tmp_path, row, expected):
    good = json.dumps({"text": "A long enough paragraph of ordinary words, well over fifty characters."})
    path = write_lines(tmp_path / "1101-1201.jsonl", [good, row])
    message = error_of(tw.load_diffsets, tmp_path, "1101-1201")
    assert message.startswith(f"{path}:2: ") and expected in message


def test_a_missing_diffset_names_the_expected_path(tmp_path):
    assert str(tmp_path / "1001-1101.jsonl") in error_of(tw.load_diffsets, tmp_path, "1001-1101")
    write_lines(tmp_path / "1001-1101.jsonl", [json.dumps({"text": "short"})])
    assert "no diff document passes" in error_of(tw.load_diffsets, tmp_path, "1001-1101")


def test_diff_meta_pairs_take_the_first_diff_document_with_subject_and_object():
    oblak = Fact("Jan Oblak", "member of sports team", "Atlético Madrid", "x:1")
    paris = Fact("Paris", "country", "France", "x:2")
    capital = Fact("Paris", "capital of", "Île-de-France", "x:3")
    nowhere = Fact("Qzxvwq", "country", "Plorb", "x:4")
    texts = ["Jan Oblak kept a clean sheet again; the club was not named in this report.",  # subject only
             "JAN OBLAK signed a new contract with Atlético Madrid, the club said on Monday.",  # both: the pair
             "Jan Oblak and Atlético Madrid appear together here as well, but later in the file.",
             "Parisian fashion is famous across France, a sentence without the city's own name.",  # not a whole word
             "Paris is the capital and largest city of France, on the river Seine."]
    pairs, record = tw.diff_meta_pairs([oblak, paris, capital, nowhere], texts)
    assert [(p["document"], p["answer"]) for p in pairs] == [(texts[1], "Atlético Madrid"), (texts[4], "France")]
    assert pairs[0]["task"] == tw.probe_record(oblak)["task"]
    assert record["facts"] == 4 and record["pairs"] == 2 and record["unmatched"] == 2
    assert record["diff_documents_used"] == 2 and record["diff_documents"] == 5
    lower = Fact("Jan Oblak", "member of sports team", "atlético madrid")  # found only case-insensitively: no pair
    assert tw.diff_meta_pairs([lower], texts[1:2])[0] == []


def test_period_documents_are_the_benchmark_build(changed):
    docs = tw.period_documents("0901-1001", 6, seed=3)
    facts = tw.load_all_facts()
    _, context = tw.review_and_context(tw.context_sides(facts, 3), 512)
    again = tw.build_documents(tw.select_subjects(changed["0901-1001"], 6, 3), context, tw.period_seed(3, "0901-1001"))
    assert len(docs) == 6 and docs == again
    assert docs != tw.period_documents("0901-1001", 6, seed=4)
