"""TemporalWiki (Jang et al. 2022; TAALM §4.2) data: the probes, a context pool, and documents built from the probes.

The model learns what changed in Wikipedia period after period. The official diff documents (``TWiki_Diffsets``,
about 1 GB) are not shipped, so each period's documents are BUILT from its changed facts: one document per subject
that states every fact of that subject in natural sentences (never in the probe's wording), among Wikipedia
paragraphs that mention nothing the benchmark evaluates, so that the facts are a minority of the text as in a real
diff. Users who have the official diffsets load them with ``load_diffsets``.

Builder v2: the fact sentences are one paragraph at a seeded, uniformly drawn slot among the context paragraphs
(first, between any two, or last), so their place carries no information; v1 always put them first, and a φ
meta-trained on v1 documents learned to weight "the sentences after the title" (``taalm.position_check``).

Period 0801-0901 is only for meta-training φ (its facts are never learned or evaluated); the other three are learned
in sequence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taalm.bench import lama_data
from taalm.errors import TaalmError
from taalm.io import read_jsonl
from taalm.windowing import sentence_spans

log = logging.getLogger("taalm")

PERIODS = ("0801-0901", "0901-1001", "1001-1101", "1101-1201")
PHI_PERIOD = "0801-0901"
LEARN_PERIODS = tuple(p for p in PERIODS if p != PHI_PERIOD)
KINDS = ("changed", "unchanged")
FIELDS = ("subject", "relation", "object")
# The official probe: the metric is the mean NLL of the object's tokens at the end of this text.
PROBE_TEMPLATE = "Guess the object. \n  subject is {subject} , relation is {relation} , object is {object}"
BUILDER_VERSION = "3"  # 2: the fact sentences at a random slot among the context; 3: context split with φ's data
# A context paragraph's side is fixed by a hash of its text: evaluated documents take only EVALUATION_SIDE
# paragraphs, φ's built documents only PHI_SIDE ones, so φ never meets (and learns to ignore) the very paragraphs
# that surround the facts it is evaluated on.
EVALUATION_SIDE, PHI_SIDE = "evaluation", "phi"

MIN_CHARS, MIN_LETTERS = 50, 0.3  # the official diffset filter: drop rows under 50 characters or under 30% letters
MAX_PARAGRAPH = 600  # context paragraphs are cut to whole sentences within this many characters
MAX_FACT_SHARE = 0.4  # fact sentences (and the title) are at most this share of a document's characters
MAX_DOCUMENT = 1800  # a document is grown past this only when its facts alone need more context
MIN_EXCLUDE = 4  # exclude strings shorter than this are ignored (too common to mean anything)
_PROBE_WORDING = re.compile(r"guess\s+the\s+object|subject\s+is|relation\s+is|object\s+is", re.IGNORECASE)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str
    source: str = ""  # file:line


@dataclass(frozen=True)
class BuiltDocument:
    """One subject's document: the title (the subject), then the ``context`` paragraphs with the fact sentences
    (``statement``) as one more paragraph at slot ``fact_slot`` (0: right after the title; ``len(context)``: last),
    paragraphs separated by a blank line. Build it with ``assemble``; ``placed`` moves the fact sentences."""

    subject: str
    text: str
    facts: tuple[Fact, ...]
    statement: str
    context: tuple[str, ...]
    fact_slot: int

    @classmethod
    def assemble(cls, subject: str, facts: tuple[Fact, ...], statement: str, context: tuple[str, ...],
                 slot: int) -> BuiltDocument:
        if not 0 <= slot <= len(context):
            raise ValueError(f"slot {slot} is outside 0..{len(context)}")
        text = "\n\n".join([subject, *context[:slot], statement, *context[slot:]])
        return cls(subject, text, tuple(facts), statement, tuple(context), slot)

    def placed(self, slot: int) -> BuiltDocument:
        """The same title, fact sentences and context, with the fact sentences at ``slot`` (-1: last)."""
        return self.assemble(self.subject, self.facts, self.statement, self.context,
                             slot if slot >= 0 else len(self.context) + 1 + slot)

    @property
    def slots(self) -> int:
        """How many places the fact sentences could take: before, between and after the context paragraphs."""
        return len(self.context) + 1

    @property
    def fact_span(self) -> tuple[int, int]:
        """Character span of the fact sentences in ``text`` (what diagnostics treat as the fact tokens)."""
        start = len(self.subject) + 2 + sum(len(p) + 2 for p in self.context[:self.fact_slot])
        return start, start + len(self.statement)

    @property
    def fact_place(self) -> str:
        """first, middle or last (a document with one context paragraph has only first and last)."""
        return "first" if self.fact_slot == 0 else "last" if self.fact_slot == len(self.context) else "middle"

    @property
    def context_chars(self) -> int:
        """The pool paragraphs' characters (the rest of the text states facts: title, fact sentences, separators)."""
        return sum(map(len, self.context))

    @property
    def fact_share(self) -> float:
        return 1 - self.context_chars / len(self.text)


# ---------------------------------------------------------------------------------------------------- probes


def probe_file(period: str, kind: str, data_dir: str = "") -> Path:
    """The shipped ``{period}_{kind}.jsonl.gz``, or ``{data_dir}/{period}_{kind}.jsonl``."""
    if period not in PERIODS:
        raise TaalmError(f"unknown TemporalWiki period {period!r} (known: {', '.join(PERIODS)})")
    if kind not in KINDS:
        raise TaalmError(f"unknown TemporalWiki probe kind {kind!r} (known: {', '.join(KINDS)})")
    if data_dir:
        return Path(data_dir) / f"{period}_{kind}.jsonl"
    return Path(__file__).parents[1] / "resources" / "temporalwiki" / f"{period}_{kind}.jsonl.gz"


def load_facts(path: str | Path) -> list[Fact]:
    """Probe rows as facts; every field must be a non-empty string."""
    path = Path(path)
    facts = []
    for line, record in read_jsonl(path):
        for name in FIELDS:
            if name not in record:
                raise TaalmError(f"{path}:{line}: missing field {name!r}")
            if not isinstance(record[name], str) or not record[name].strip():
                raise TaalmError(f"{path}:{line}: field {name!r} must be a non-empty string")
        facts.append(Fact(record["subject"], record["relation"], record["object"], f"{path.name}:{line}"))
    if not facts:
        raise TaalmError(f"{path}: no facts")
    return facts


def probe_record(fact: Fact) -> dict[str, str]:
    """The official probe of ``fact``: the object ends the task."""
    task = PROBE_TEMPLATE.format(subject=fact.subject, relation=fact.relation, object=fact.object)
    return {"task": task, "answer": fact.object}


def select_subset(facts: list[Fact], n: int, seed: int) -> list[Fact]:
    """A seeded subset of ``n`` facts in file order (``n`` = 0: all)."""
    if n < 0:
        raise TaalmError(f"the number of facts must be >= 0, got {n}")
    if n == 0 or n >= len(facts):
        return list(facts)
    return [facts[i] for i in sorted(random.Random(seed).sample(range(len(facts)), n))]


def select_subjects(facts: list[Fact], n_subjects: int, seed: int) -> list[Fact]:
    """Every fact of ``n_subjects`` seeded subjects, in file order (0: all); a document needs all of its subject."""
    if n_subjects < 0:
        raise TaalmError(f"the number of subjects must be >= 0, got {n_subjects}")
    subjects = list(dict.fromkeys(f.subject for f in facts))
    if n_subjects == 0 or n_subjects >= len(subjects):
        return list(facts)
    chosen = set(random.Random(seed).sample(subjects, n_subjects))
    return [f for f in facts if f.subject in chosen]


# ---------------------------------------------------------------------------------------------------- context pool


def passes_filter(text: str) -> bool:
    """The official diffset filter: at least 50 characters, at least 30% of them letters."""
    return len(text) >= MIN_CHARS and sum(c.isalpha() for c in text) >= MIN_LETTERS * len(text)


def has_probe_wording(text: str) -> bool:
    """Whether ``text`` contains the probe's wording ("Guess the object", "subject is", ...), case-insensitively."""
    return _PROBE_WORDING.search(text) is not None


def _cut(text: str, limit: int = MAX_PARAGRAPH) -> str | None:
    """``text`` cut to its longest run of leading whole sentences within ``limit`` characters (None: none fits)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    ends = [e for _, e in sentence_spans(text) if e <= limit]
    return text[:ends[-1]] if ends else None


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.casefold()))


class _Matcher:
    """Finds which keys (word tuples, compared case-insensitively) occur in a text as whole words.

    One set intersection per n-gram length instead of one regex per key: 10k keys × 1.4k paragraphs take ~1 s."""

    def __init__(self, keys: Iterable[tuple[str, ...]]):
        self.by_length: dict[int, set[tuple[str, ...]]] = {}
        for key in keys:
            if key:
                self.by_length.setdefault(len(key), set()).add(key)

    def found(self, text: str) -> set[tuple[str, ...]]:
        words = _words(text)
        hits: set[tuple[str, ...]] = set()
        for n, keys in self.by_length.items():
            hits |= keys.intersection(zip(*(words[i:] for i in range(n)), strict=False))
        return hits


def _lama_paragraphs() -> list[str]:
    """LAMA-ckl evidence paragraphs (Wikipedia), deduplicated, in file order."""
    texts = (record["evidence"] for name in lama_data.FILES for _, record in read_jsonl(lama_data.data_file(name))
             if isinstance(record.get("evidence"), str))
    return list(dict.fromkeys(texts))


def context_pool(exclude: Iterable[str] = (), exclude_facts: Iterable[Fact] = ()) -> list[str]:
    """Wikipedia paragraphs to surround built facts with: LAMA-ckl evidence, cut to whole sentences within 600
    characters, kept when it passes the official filter and has no probe wording.

    A paragraph is dropped when it contains any ``exclude`` string of at least 4 characters, or both the subject and
    the object of any ``exclude_facts`` fact (it might state that fact), as whole words, case-insensitively."""
    strings = _Matcher(_words(s) for s in exclude if len(s.strip()) >= MIN_EXCLUDE)
    objects_of: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for fact in exclude_facts:
        objects_of.setdefault(_words(fact.subject), set()).add(_words(fact.object))
    ends = _Matcher([*objects_of, *(o for objects in objects_of.values() for o in objects)])
    pool = []
    for text in _lama_paragraphs():
        text = _cut(text)
        if text is None or not passes_filter(text) or has_probe_wording(text) or strings.found(text):
            continue
        hits = ends.found(text)
        if any(objects_of[s] & hits for s in hits if s in objects_of):
            continue
        pool.append(text)
    return list(dict.fromkeys(pool))


# ---------------------------------------------------------------------------------------------------- templates

# Phrasings per relation: {s} subject, {o} objects ("X", "X and Y", "X, Y and Z"), {is}/{was} agree with {o},
# {pl} pluralises the noun before it. The seeded RNG picks one; a filled phrasing with the probe's wording is skipped.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "languages spoken written or signed": ("{s} speaks {o}.", "{s} can speak and write {o}.",
                                           "The language{pl} used by {s} {is} {o}."),
    "occupation": ("{s}'s occupation{pl} {is} {o}.", "Professionally, {s} has worked as {o}.",
                   "By occupation, {s} is described as {o}."),
    "place of birth": ("{s} was born in {o}.", "The birthplace of {s} {was} {o}.", "{s} was born at {o}."),
    "instance of": ("{s} is classified as {o}.", "{s} is an instance of {o}.",
                    "In reference works, {s} is listed as {o}."),
    "place of death": ("{s} died in {o}.", "{s} passed away in {o}.", "The place of death of {s} {was} {o}."),
    "country of citizenship": ("{s} is a citizen of {o}.", "{s} holds the citizenship of {o}.",
                               "{s} has citizenship of {o}."),
    "country": ("{s} is in {o}.", "{s} is associated with the country of {o}.", "{s} belongs to {o}."),
    "located in the administrative territorial entity": ("{s} is located in {o}.", "{s} lies within {o}.",
                                                         "Administratively, {s} is part of {o}."),
    "language of work or name": ("{s} is written or performed in {o}.", "The language{pl} of {s} {is} {o}.",
                                 "{s} uses {o} as its language."),
    "has part": ("{s} includes {o}.", "Parts of {s} include {o}.", "{s} consists in part of {o}."),
    "educated at": ("{s} was educated at {o}.", "{s} studied at {o}.", "{s} attended {o}."),
    "given name": ("{s} has the given name {o}.", "The given name{pl} of {s} {is} {o}."),
    "different from": ("{s} should not be confused with {o}.", "{s} is distinct from {o}.",
                       "{s} is different from {o}."),
    "country for sport": ("{s} represents {o} in sport.", "In international competition, {s} plays for {o}.",
                          "{s} competes for {o}."),
    "native language": ("The native language{pl} of {s} {is} {o}.", "{s} is a native speaker of {o}.",
                        "{s} grew up speaking {o}."),
    "cast member": ("The cast of {s} includes {o}.", "{s} stars {o}.", "{o} appeared in {s}."),
    "form of creative work": ("{s} takes the form of {o}.", "As a creative work, {s} is classified as {o}."),
    "employer": ("{s} has worked for {o}.", "{s} was employed by {o}.", "{o} employed {s}."),
    "subclass of": ("{s} is a subclass of {o}.", "{s} is a type of {o}.", "{s} is considered a kind of {o}."),
    "member of": ("{s} is a member of {o}.", "{s} has been a member of {o}.", "{s} belongs to {o}."),
    "member of sports team": ("{s} plays for {o}.", "{s} has played for {o}.", "{s} was signed by {o}."),
    "sport": ("{s} is associated with the sport of {o}.", "The sport{pl} of {s} {is} {o}.",
              "{s} is involved in {o}."),
    "of": ("{s} is associated with {o}.", "{s} is linked to {o}.", "{s} is connected with {o}."),
    "position held": ("{s} has held the position of {o}.", "{s} served as {o}.", "{s} held the office of {o}."),
    "award received": ("{s} received {o}.", "{s} was awarded {o}.", "{s} won {o}."),
    "characters": ("{s} features the character{pl} {o}.", "Characters in {s} include {o}."),
    "family name": ("{s} has the family name {o}.", "The surname{pl} of {s} {is} {o}."),
    "replaces": ("{s} replaced {o}.", "{s} succeeded {o}.", "{s} took the place of {o}."),
    "set in environment": ("{s} is set in environments such as {o}.", "The setting of {s} includes {o}."),
    "field of work": ("{s} works in the field of {o}.", "{s} has worked in {o}.", "{s} is active in {o}."),
    "applies to part": ("Some details of {s} apply to {o}.", "Part of what is recorded about {s} concerns {o}."),
    "genre": ("{s} belongs to the genre of {o}.", "The genre{pl} of {s} {is} {o}.",
              "{s} is usually classed under {o}."),
    "sibling": ("{s} is a sibling of {o}.", "{s}'s sibling{pl} {is} {o}.", "{o} {is} the sibling{pl} of {s}."),
    "participant in": ("{s} took part in {o}.", "{s} participated in {o}.", "{s} competed in {o}."),
    "academic major": ("{s} majored in {o}.", "{s} studied {o}.", "At university, {s} studied {o}."),
    "father": ("{s}'s father {is} {o}.", "{o} {is} the father of {s}."),
    "academic degree": ("{s} holds {o}.", "{s} earned the degree of {o}.", "{s} was awarded the degree {o}."),
    "location": ("{s} is located in {o}.", "The location of {s} {is} {o}."),
    "part of": ("{s} is part of {o}.", "{s} forms part of {o}.", "{s} belongs to {o}."),
    "child": ("{s} is the parent of {o}.", "The children of {s} include {o}."),
    "residence": ("{s} lives in {o}.", "{s} has resided in {o}.", "{s} resides in {o}."),
    "spouse": ("{s} is married to {o}.", "{s} married {o}.", "{s}'s spouse{pl} {is} {o}."),
    "country of origin": ("{s} originated in {o}.", "{s} comes from {o}.", "The country of origin of {s} {is} {o}."),
    "notable work": ("{s} is known for {o}.", "Notable works by {s} include {o}.", "{s} is best known for {o}."),
    "replaced by": ("{s} was replaced by {o}.", "{s} was succeeded by {o}.", "{o} replaced {s}."),
    "author": ("{s} was written by {o}.", "{o} wrote {s}.", "{s} is a work by {o}."),
    "work location": ("{s} works in {o}.", "{s} has worked in {o}.", "{s} worked in {o}."),
    "cause of death": ("{s} died of {o}.", "The cause of death of {s} {was} {o}.", "{s}'s death was caused by {o}."),
    "writing language": ("{s} wrote in {o}.", "{s} writes in {o}."),
    "unmarried partner": ("{s} has been in a relationship with {o}.", "{s}'s partner{pl} {is} {o}.",
                          "{s} was the partner of {o}."),
    "military rank": ("{s} held the military rank of {o}.", "{s} reached the rank of {o}.",
                      "{s} served with the rank of {o}."),
    "place of burial": ("{s} is buried in {o}.", "{s} was buried at {o}.", "{s} was laid to rest at {o}."),
    "league": ("{s} plays in {o}.", "{s} competes in {o}."),
    "object has role": ("{s} is associated with the role of {o}.", "In this context, {s} involves the role of {o}."),
    "medical condition": ("{s} has suffered from {o}.", "{s} was diagnosed with {o}."),
    "symbol represents": ("In {s}, a symbol stands for {o}.", "In {s}, a symbol represents {o}."),
    "stated in": ("{s} is described in {o}.", "{s} is recorded in {o}.", "Information about {s} appears in {o}."),
    "operator": ("{s} is operated by {o}.", "{o} operates {s}.", "{s} is run by {o}."),
    "publisher": ("{s} was published by {o}.", "{o} published {s}.", "The publisher of {s} {is} {o}."),
    "owned by": ("{s} is owned by {o}.", "{o} owns {s}.", "{s} belongs to {o}."),
    "kinship to subject": ("{s} has a relative who is their {o}.",
                           "The family of {s} includes a relative described as {o}."),
    "character role": ("{s} includes the character role of {o}.", "{s} features the role of {o}."),
    "headquarters location": ("{s} is headquartered in {o}.", "{s} has its headquarters in {o}.",
                              "The headquarters of {s} are in {o}."),
    "place of publication": ("{s} was published in {o}.", "{s} was first published in {o}."),
    "platform": ("{s} is available on {o}.", "{s} runs on {o}.", "{s} was released for {o}."),
    "uses": ("{s} uses {o}.", "{s} makes use of {o}."),
    "significant event": ("Significant events for {s} include {o}.", "{s} is associated with the event {o}."),
    "product or material produced": ("{s} produces {o}.", "Products of {s} include {o}."),
    "candidate": ("Candidates in {s} included {o}.", "{o} stood as a candidate in {s}.", "{o} ran in {s}."),
    "member of political party": ("{s} is a member of {o}.", "{s} belongs to the party {o}.",
                                  "Politically, {s} has been affiliated with {o}."),
    "subject has role": ("{s} has the role of {o}.", "{s} acts as {o}.", "{s} serves as {o}."),
    "founded by": ("{s} was founded by {o}.", "{o} founded {s}.", "{s} was established by {o}."),
    "electoral district": ("{s} represents the electoral district of {o}.", "{s} was elected for {o}.",
                           "{s} sits for {o}."),
    "named after": ("{s} is named after {o}.", "{s} was named in honour of {o}.", "The name of {s} honours {o}."),
    "chairperson": ("{s} is chaired by {o}.", "{o} chairs {s}.", "The chairperson of {s} {is} {o}."),
    "religion": ("{s} follows {o}.", "{s} adheres to {o}.", "The religion of {s} {is} {o}."),
    "sports discipline competed in": ("{s} competes in {o}.", "{s} has competed in {o}."),
    "significant person": ("{s} is associated with {o}.", "Significant people for {s} include {o}."),
    "parent organization": ("{s} is a subsidiary of {o}.", "{s} is part of {o}.",
                            "The parent organization of {s} {is} {o}."),
    "color": ("{s} is colored {o}.", "The color{pl} of {s} {is} {o}."),
    "coach of sports team": ("{s} has coached {o}.", "{s} is the coach of {o}.", "{s} was the head coach of {o}."),
    "subsidiary": ("{o} {is} a subsidiary of {s}.", "{s} owns the subsidiary {o}.", "Subsidiaries of {s} include {o}."),
    "main subject": ("{s} is about {o}.", "The main topic of {s} {is} {o}.", "{s} deals with {o}."),
    "has works in the collection": ("{s} has works in the collection of {o}.", "Works by {s} are held by {o}.",
                                    "{o} holds works by {s}."),
    "conflict": ("{s} took part in {o}.", "{s} fought in {o}.", "{s} served in {o}."),
    "composer": ("{s} was composed by {o}.", "The music of {s} was written by {o}.", "{o} composed {s}."),
    "student of": ("{s} studied under {o}.", "{s} was a student of {o}.", "{s} was taught by {o}."),
    "voice actor": ("{s} is voiced by {o}.", "{o} provided the voice of {s}."),
    "direction relative to location": ("{s} lies to the {o}.", "{s} is situated toward the {o}."),
    "applies to jurisdiction": ("{s} applies to {o}.", "The jurisdiction of {s} {is} {o}."),
    "present in work": ("{s} appears in {o}.", "{s} is a character in {o}.", "{s} features in {o}."),
    "interested in": ("{s} is interested in {o}.", "{s} has an interest in {o}."),
    "mother": ("{s}'s mother {is} {o}.", "{o} {is} the mother of {s}.", "{s} was born to {o}."),
    "participant": ("Participants in {s} included {o}.", "{o} took part in {s}.", "{o} participated in {s}."),
    "intended public": ("{s} is aimed at {o}.", "{s} is intended for {o}.", "The intended audience of {s} {is} {o}."),
    "industry": ("{s} operates in the {o} industry.", "{s} is active in {o}."),
    "type locality (biology)": ("The type locality of {s} {is} {o}.", "{s} was first described from {o}."),
    "director": ("{s} was directed by {o}.", "{o} directed {s}.", "The director of {s} {is} {o}."),
    "performer": ("{s} is performed by {o}.", "{o} performed {s}.", "{s} was recorded by {o}."),
    "screenwriter": ("The screenplay of {s} was written by {o}.", "{o} wrote the screenplay for {s}."),
    "creator": ("{s} was created by {o}.", "{o} created {s}."),
    "distributed by": ("{s} is distributed by {o}.", "{o} distributed {s}."),
    "followed by": ("{s} was followed by {o}.", "{o} came after {s}."),
    "follows": ("{s} follows {o}.", "{s} came after {o}."),
    "depicts": ("{s} depicts {o}.", "{s} shows {o}."),
    "influenced by": ("{s} was influenced by {o}.", "{o} influenced {s}."),
    "instrument": ("{s} plays {o}.", "{s} performs on {o}."),
    "record label": ("{s} has recorded for {o}.", "{s} is signed to {o}."),
    "ethnic group": ("{s} belongs to the {o} ethnic group.", "By ethnicity, {s} is described as {o}."),
    "sex or gender": ("The gender of {s} {is} {o}.", "{s} is recorded as {o}."),
    "operating system": ("{s} runs on {o}.", "{s} supports the operating system{pl} {o}."),
    "home venue": ("{s} plays its home games at {o}.", "The home venue of {s} {is} {o}."),
    "position played on team / speciality": ("{s} plays as {o}.", "On the field, {s} plays in the position of {o}."),
    "narrative location": ("{s} is set in {o}.", "The story of {s} takes place in {o}."),
    "made from material": ("{s} is made from {o}.", "{s} is made of {o}."),
    "elected in": ("{s} was elected in {o}.", "{s} won a seat in {o}."),
    "affiliation": ("{s} is affiliated with {o}.", "{s} has an affiliation with {o}."),
    "relative": ("{s} is a relative of {o}.", "{s} is related to {o}."),
    "noble title": ("{s} held the title of {o}.", "{s} bore the noble title {o}."),
    "published in": ("{s} was published in {o}.", "{s} appeared in {o}."),
    "enemy of": ("{s} is an enemy of {o}.", "{s} has fought against {o}."),
    "officeholder": ("The office of {s} has been held by {o}.", "{o} held the office of {s}."),
    "facet of": ("{s} is an aspect of {o}.", "{s} is a facet of {o}."),
}
GENERIC = ("The {relation} of {s} {is} {o}.", "{s} has {o} as its {relation}.",
           "Records give {o} as the {relation} of {s}.")
FALLBACK = "For {s}, {relation}: {o}."  # no "is" at all: safe unless the fact's own strings hold the probe wording

# φ's own wording (``taalm phi-data --temporalwiki_wording own``): for the relations most frequent in 0801-0901, and
# generic ones for the rest, none of them a phrasing of the above, so a φ trained on 0801-0901 documents in this
# wording has seen no fact sentence of an evaluated period's documents (the context paragraphs are split already).
PHI_TEMPLATES: dict[str, tuple[str, ...]] = {
    "different from": ("{s} is not the same as {o}.", "Do not mistake {s} for {o}."),
    "occupation": ("{s} works as {o}.", "{s} earns a living as {o}."),
    "languages spoken written or signed": ("{s} is fluent in {o}.", "{s} communicates in {o}."),
    "instance of": ("{s} is one example of {o}.", "{s} counts as {o}."),
    "country": ("{s} lies in the country of {o}.", "{s} is found in {o}."),
    "country of citizenship": ("{s} is a national of {o}.", "{s} carries a passport of {o}."),
    "place of death": ("{s}'s life ended in {o}.", "{s} died at {o}."),
    "member of sports team": ("{s} is on the roster of {o}.", "{s} lines up for {o}."),
    "country for sport": ("{s} turns out for {o} internationally.", "At international level, {s} represents {o}."),
    "place of birth": ("{s} is a native of {o}.", "{s} came into the world in {o}."),
    "has part": ("{s} contains {o}.", "Among the parts of {s} {is} {o}."),
    "given name": ("{s} goes by the first name {o}.", "{s}'s first name{pl} {is} {o}."),
    "located in the administrative territorial entity": ("{s} is situated in {o}.", "{s} falls within {o}."),
    "educated at": ("{s} went to school at {o}.", "{s} received an education at {o}."),
    "language of work or name": ("{s} is produced in {o}.", "{o} {is} the language of the work {s}."),
    "participant in": ("{s} was a participant in {o}.", "{s} was involved in {o}."),
    "sport": ("{s} plays the sport of {o}.", "{s} is active in the sport of {o}."),
    "of": ("{s} relates to {o}.", "{s} is tied to {o}."),
    "position held": ("{s} occupied the post of {o}.", "{s} was appointed {o}."),
    "award received": ("{s} is a recipient of {o}.", "{s} was honoured with {o}."),
    "employer": ("{s} works for {o}.", "{s} is on the staff of {o}."),
    "subclass of": ("{s} is a subtype of {o}.", "{s} is a variety of {o}."),
    "genre": ("{s} falls into the genre of {o}.", "{s} is an example of {o}."),
    "part of": ("{s} is a component of {o}.", "{s} is included in {o}."),
    "academic degree": ("{s} has a degree of {o}.", "{s} graduated with {o}."),
    "native language": ("{s}'s mother tongue{pl} {is} {o}.", "{s} learned {o} as a first language."),
    "location": ("{s} can be found in {o}.", "{s} sits in {o}."),
    "cast member": ("{o} {is} in the cast of {s}.", "{s} features {o} in its cast."),
    "residence": ("{s} makes a home in {o}.", "{s} is a resident of {o}."),
    "family name": ("{s}'s last name{pl} {is} {o}.", "{s} carries the family name {o}."),
    "owned by": ("{s} is the property of {o}.", "{o} {is} the owner of {s}."),
    "member of political party": ("{s} is affiliated with the party {o}.", "{s} joined {o}."),
}
PHI_GENERIC = ("{s}'s {relation}: {o}.", "Under {relation}, the entry for {s} lists {o}.",
               "{o} {is} recorded for {s} under {relation}.")
PHI_FALLBACK = "{s} — {relation} — {o}."
WORDINGS = {"shared": (TEMPLATES, GENERIC, FALLBACK), "own": (PHI_TEMPLATES, PHI_GENERIC, PHI_FALLBACK)}
"""the fact sentences' phrasings: ``shared`` is every period's (the benchmark's documents), ``own`` φ's side only"""


def join_objects(objects: list[str]) -> str:
    """"X", "X and Y", "X, Y and Z"."""
    return objects[0] if len(objects) == 1 else ", ".join(objects[:-1]) + " and " + objects[-1]


def fact_sentence(subject: str, relation: str, objects: list[str], rng: random.Random, wording: str = "shared") -> str:
    """One sentence stating ``subject``'s ``relation`` objects: the relation's phrasings in a seeded order, then the
    generic ones; the first without the probe's wording (``wording``: a key of ``WORDINGS``)."""
    templates, generic_phrasings, fallback = WORDINGS[wording]
    plural = len(objects) > 1
    values = {"s": subject, "o": join_objects(objects), "relation": relation, "is": "are" if plural else "is",
              "was": "were" if plural else "was", "pl": "s" if plural else ""}
    own, generic = list(templates.get(relation, ())), list(generic_phrasings)
    rng.shuffle(own)
    rng.shuffle(generic)
    for phrasing in own + generic + [fallback]:
        sentence = phrasing.format_map(values)
        if not has_probe_wording(sentence):
            return sentence
    raise TaalmError(f"the fact ({subject!r}, {relation!r}, {values['o']!r}) itself contains the probe's wording")


# ---------------------------------------------------------------------------------------------------- documents


class _Paragraphs:
    """Pool paragraphs in a seeded order, reshuffled each time the pool runs out."""

    def __init__(self, pool: list[str], rng: random.Random):
        if not pool:
            raise TaalmError("the context pool is empty: every paragraph was excluded")
        self.pool, self.rng, self.queue = list(pool), rng, []

    def take(self, avoid: list[str]) -> str:
        """The next paragraph not in ``avoid`` (repeating one only when the whole pool is in ``avoid``)."""
        for _ in range(2 * len(self.pool)):
            if not self.queue:
                self.queue = list(self.pool)
                self.rng.shuffle(self.queue)
            paragraph = self.queue.pop()
            if paragraph not in avoid:
                return paragraph
        return paragraph


def _by_subject(facts: list[Fact]) -> dict[str, list[Fact]]:
    groups: dict[str, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(fact.subject, []).append(fact)
    return groups


def _fact_block(subject: str, facts: list[Fact], rng: random.Random, wording: str) -> str:
    """The fact sentences: one per relation (objects of the same relation stated together)."""
    objects: dict[str, list[str]] = {}
    for fact in facts:
        listed = objects.setdefault(fact.relation, [])
        if fact.object not in listed:
            listed.append(fact.object)
    return " ".join(fact_sentence(subject, relation, listed, rng, wording) for relation, listed in objects.items())


def _fit(paragraph: str, need: int, room: int) -> str:
    """``paragraph`` shortened to whole leading sentences when the whole would overflow ``room`` characters but a
    prefix of at least ``need`` characters fits (keeps documents short without breaking the fact share)."""
    if len(paragraph) <= room:
        return paragraph
    ends = [e for _, e in sentence_spans(paragraph) if need <= e <= room and e >= MIN_CHARS]
    return paragraph[:ends[0]] if ends else paragraph


def build_document(subject: str, facts: list[Fact], paragraphs: _Paragraphs, rng: random.Random,
                   wording: str = "shared") -> BuiltDocument:
    """Title, then pool paragraphs (added until the fact part is at most ``MAX_FACT_SHARE`` of the text) with the
    fact sentences at a slot drawn uniformly from first, between any two, or last."""
    statement = _fact_block(subject, facts, rng, wording)
    chosen: list[str] = []
    length = len(subject) + 2 + len(statement)  # the text's length; where the statement goes does not change it
    while not chosen or 1 - sum(map(len, chosen)) / length > MAX_FACT_SHARE:
        fixed = length + 2  # with the next separator; separators count as the fact part
        need = math.ceil((fixed - sum(map(len, chosen))) / MAX_FACT_SHARE - fixed)  # the next paragraph's length
        chosen.append(_fit(paragraphs.take(chosen), need, MAX_DOCUMENT - fixed))
        length = fixed + len(chosen[-1])
    doc = BuiltDocument.assemble(subject, tuple(facts), statement, tuple(chosen), rng.randint(0, len(chosen)))
    if has_probe_wording(doc.text):
        raise TaalmError(f"{facts[0].source}: the document built for {subject!r} contains the probe's wording")
    return doc


def build_documents(facts: list[Fact], context: list[str], seed: int, wording: str = "shared") -> list[BuiltDocument]:
    """One document per subject (first-appearance order) stating all its facts among ``context`` paragraphs (use
    ``context_pool``: nothing evaluated), the fact sentences (in ``wording``) at a seeded random slot. Deterministic for
    a seed."""
    rng = random.Random(seed)
    paragraphs = _Paragraphs(context, rng)
    return [build_document(subject, group, paragraphs, rng, wording) for subject, group in _by_subject(facts).items()]


def meta_pairs(docs: list[BuiltDocument]) -> list[dict[str, str]]:
    """One (document, probe task, object) pair per fact: what φ is meta-trained on (period 0801-0901)."""
    return [{"document": doc.text, **probe_record(fact)} for doc in docs for fact in doc.facts]


def provenance(facts: list[Fact], docs: list[BuiltDocument], seed: int) -> dict[str, Any]:
    """Counts, fact shares, where the fact sentences went (first / middle / last, and the mean of slot / (slots - 1):
    0 first, 1 last), the builder version, the seed and a hash of the built texts (for run records)."""
    shares = [doc.fact_share for doc in docs]
    digest = hashlib.sha256(json.dumps([doc.text for doc in docs]).encode("utf-8")).hexdigest()
    places = {place: sum(doc.fact_place == place for doc in docs) for place in ("first", "middle", "last")}
    relative = [doc.fact_slot / len(doc.context) for doc in docs]
    return {"builder_version": BUILDER_VERSION, "seed": seed, "subjects": len({f.subject for f in facts}),
            "documents": len(docs), "facts": len(facts), "characters": sum(len(doc.text) for doc in docs),
            "mean_fact_share": sum(shares) / len(shares) if shares else 0.0, "max_fact_share": max(shares, default=0.0),
            "fact_places": places, "mean_relative_slot": sum(relative) / len(relative) if relative else 0.0,
            "sha256": digest}


def document_record(doc: BuiltDocument) -> dict[str, Any]:
    """A built document as a ``docs.jsonl`` row: its text, and where its fact sentences are (slot of ``slots``,
    character span) so that diagnostics can find the fact tokens."""
    return {"text": doc.text, "subject": doc.subject, "fact_slot": doc.fact_slot, "slots": doc.slots,
            "fact_span": list(doc.fact_span)}


def period_seed(seed: int, period: str) -> int:
    """The builder's seed for ``period``'s documents in a run with ``seed``."""
    return seed * 1000 + PERIODS.index(period)


def load_all_facts(data_dir: str = "") -> dict[str, dict[str, list[Fact]]]:
    """Every period's changed and unchanged probes as facts: ``{period: {kind: facts}}``."""
    return {p: {k: load_facts(probe_file(p, k, data_dir)) for k in KINDS} for p in PERIODS}


def context_side(paragraph: str) -> str:
    """EVALUATION_SIDE or PHI_SIDE, by a hash of the paragraph's words (about half each)."""
    digest = hashlib.sha256(" ".join(_words(paragraph)).encode("utf-8")).digest()
    return PHI_SIDE if digest[0] % 2 else EVALUATION_SIDE


def context_sides(facts: dict[str, dict[str, list[Fact]]], seed: int) -> dict[str, list[str]]:
    """The context pool split into its EVALUATION_SIDE and PHI_SIDE paragraphs, without any paragraph that could
    state a fact of any period, each side shuffled by ``seed``."""
    everything = [f for period in facts.values() for kind in period.values() for f in kind]
    sides: dict[str, list[str]] = {EVALUATION_SIDE: [], PHI_SIDE: []}
    for paragraph in context_pool(exclude_facts=everything):
        sides[context_side(paragraph)].append(paragraph)
    for paragraphs in sides.values():
        random.Random(seed).shuffle(paragraphs)
    return sides


def review_and_context(sides: dict[str, list[str]], review_paragraphs: int) -> tuple[list[str], list[str]]:
    """Mix-Review's paragraphs (the first ``review_paragraphs`` of φ's side: θ replays them, no benchmark evaluates
    them) and the builder's context (the evaluation side), from ``context_sides``."""
    return sides[PHI_SIDE][:review_paragraphs], sides[EVALUATION_SIDE]


def period_documents(period: str, subjects: int, seed: int, data_dir: str = "",
                     review_paragraphs: int = 512) -> list[BuiltDocument]:
    """The documents ``taalm bench temporalwiki`` builds for ``period`` with these options (--changed_subjects, or
    --meta_subjects for 0801-0901; --seed; --data_dir; --review_paragraphs): for diagnostics such as
    ``taalm.position_check``."""
    facts = load_all_facts(data_dir)
    _, context = review_and_context(context_sides(facts, seed), review_paragraphs)
    chosen = select_subjects(facts[period]["changed"], subjects, seed)
    return build_documents(chosen, context, period_seed(seed, period))


# ---------------------------------------------------------------------------------------------------- diffsets


def diffset_file(directory: str | Path, period: str) -> Path:
    """``{directory}/{period}.jsonl``, else ``diffset_{MMMM}.jsonl`` (0801-0901 -> 0809) when only that exists."""
    if period not in PERIODS:
        raise TaalmError(f"unknown TemporalWiki period {period!r} (known: {', '.join(PERIODS)})")
    path = Path(directory) / f"{period}.jsonl"
    short = Path(directory) / f"diffset_{period[:2]}{period[5:7]}.jsonl"
    if not path.is_file() and short.is_file():
        return short
    if not path.is_file():
        raise TaalmError(f"{path}: diffset file not found (one JSONL of {{\"text\"}} rows per period)")
    return path


def read_diffset(path: str | Path) -> tuple[list[str], int]:
    """The texts of a diffset JSONL that pass the official filter, and how many rows it dropped."""
    texts, dropped = [], 0
    for line, record in read_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise TaalmError(f"{path}:{line}: missing string field 'text'")
        if passes_filter(record["text"]):
            texts.append(record["text"])
        else:
            dropped += 1
    return texts, dropped


def load_diffsets(directory: str | Path, period: str) -> list[str]:
    """The official diff documents of ``period`` (rows under 50 characters or 30% letters dropped, as upstream)."""
    path = diffset_file(directory, period)
    texts, dropped = read_diffset(path)
    log.info("%s: %d diff documents, %d dropped by the official filter", path, len(texts), dropped)
    if not texts:
        raise TaalmError(f"{path}: no diff document passes the filter (>= 50 characters, >= 30% letters)")
    return texts


def diff_meta_pairs(facts: list[Fact], texts: list[str]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """φ's meta-training pairs from a period's official diff documents (the official φ data are rows of diff text,
    subject, relation, object): each fact with the first diff document, in file order, that contains its subject and
    its object as whole words, case-insensitively, and the object verbatim (where answer windows look for it). Facts
    without such a document are left out and counted. Returns the pairs and a record of the pairing."""
    by_subject: dict[tuple[str, ...], list[int]] = {}
    for i, fact in enumerate(facts):
        by_subject.setdefault(_words(fact.subject), []).append(i)
    by_subject.pop((), None)  # a subject without a word cannot be found
    objects = [_words(f.object) for f in facts]
    matcher = _Matcher([*by_subject, *objects])
    document: dict[int, int] = {}
    for j, text in enumerate(texts):
        if len(document) == len(facts):
            break
        hits = matcher.found(text)
        for key in hits.intersection(by_subject):
            for i in by_subject[key]:
                if i not in document and objects[i] in hits and facts[i].object in text:
                    document[i] = j
    pairs = [{"document": texts[document[i]], **probe_record(f)} for i, f in enumerate(facts) if i in document]
    record = {"rule": "each fact with the first diff document (file order) that contains its subject and object",
              "facts": len(facts), "pairs": len(pairs), "unmatched": len(facts) - len(pairs),
              "diff_documents_used": len(set(document.values())), "diff_documents": len(texts)}
    return pairs, record
