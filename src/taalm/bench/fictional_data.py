"""Facts about generated fictional entities: documents no pretrained model can know, and probes it cannot guess.

Every name is built from syllables, so no fact can leak from pretraining. A fact is (subject, relation, object); its
document is a few neutral filler sentences with the fact sentence at a seeded place (first, middle or last), and its
probe is a paraphrased cloze that ends with the answer and is never the document's own sentence. Objects are
invented too (people, places, organisations, creatures, languages, plants) or numbers with a random first digit, so
the relation alone gives the answer away rarely.

Two sides never share an invented word: a word belongs to the TEST side (the benchmark's To-Learn facts) or to the
TRAIN side (φ's meta-training and lr-selection pairs) by a hash of the word (``side_of``), whatever the seed. Their
relations overlap only partly (``SHARED``, ``TEST_ONLY``, ``TRAIN_ONLY``), so a φ trained on the train side is also
tested on relations it never saw. Since version 2 they share no filler sentence either (``FILLER`` / ``TRAIN_FILLER``):
in version 1 the train side drew its filler from the test side's pool, so φ had seen every sentence around a test fact
except the fact itself (moving the test facts into unseen filler dropped the shipped SmolLM2 φ's answer-token ROC-AUC
from 0.839 to 0.655). Version 3's train side words its relations in sentences of its own (``TRAIN_DOCUMENTS``);
version 4's asks none of the test side's relations and 22 of its own (``BROAD_TRAIN``). The test side is the same in
every version; ``version="1"`` rebuilds version 1's train side.

Test-side documents come in a ``style``: ``prose`` (the benchmark's: filler sentences around the fact) or, to see
how a φ does on kinds of documents it never met, ``letter`` (a personal letter: salutation, chatty sentences,
signature) and ``record`` (an archive card: one field per line, the fact as its summary). Their frames and filler are
their own, never on φ's side; every style draws its own names, so the prose facts stay those of every earlier run.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GENERATOR_VERSION = "2"
VERSIONS = ("1", "2", "3", "4")
SIDES = ("test", "train")
STYLES = ("prose", "letter", "record")
PLACES = ("first", "middle", "last")


@dataclass(frozen=True)
class Relation:
    """A relation: its subject and object kinds, the document sentences that state it and the probes that ask it
    (``{s}`` the subject's mention, ``{o}`` the answer; every probe ends with ``{o}``)."""

    name: str
    subject: str
    object: str
    documents: tuple[str, ...]
    probes: tuple[str, ...]


RELATIONS = {r.name: r for r in (
    # person subjects
    Relation("birthplace", "person", "place",
             ("{s} was born in {o}.", "{s} was born in the small town of {o}.", "The birth of {s} took place in {o}."),
             ("The birthplace of {s} is {o}", "{s} came into the world in {o}", "{s}'s place of birth is {o}")),
    Relation("teacher", "person", "person",
             ("{s} studied under {o}.", "As a young student, {s} was taught by {o}.", "{o} was the teacher of {s}."),
             ("The teacher of {s} was {o}", "{s} learned the craft from {o}", "{s} was a pupil of {o}")),
    Relation("employer", "person", "org",
             ("{s} worked for the {o}.", "For many years {s} was employed by the {o}.", "{s} held a post at the {o}."),
             ("The employer of {s} was the {o}", "{s} earned a living working for the {o}",
              "{s} was on the staff of the {o}")),
    Relation("language", "person", "language",
             ("{s} spoke {o} at home.", "The mother tongue of {s} was {o}.", "{s} grew up speaking {o}."),
             ("The native language of {s} is {o}", "{s} was raised speaking {o}", "The first language of {s} was {o}")),
    Relation("spouse", "person", "person",
             ("{s} married {o}.", "{s} was married to {o} for many years.", "{s} and {o} were wed in the spring."),
             ("The spouse of {s} was {o}", "{s} was wed to {o}", "{s} shared a household with their spouse {o}")),
    Relation("pet", "person", "creature",
             ("{s} kept a {o} as a pet.", "{s} raised a tame {o} at home.", "A {o} lived with {s} for years."),
             ("The pet of {s} was a {o}", "The animal {s} kept at home was a {o}", "{s} owned a tame {o}")),
    # place subjects
    Relation("river", "place", "river",
             ("The river {o} flows through {s}.", "{s} lies on the banks of the {o}.",
              "{s} was built along the river {o}."),
             ("The river that runs through {s} is the {o}", "{s} is a town on the river {o}",
              "The river of {s} is called the {o}")),
    Relation("region", "place", "place",
             ("{s} is a town in the province of {o}.", "{s} belongs to the region of {o}.", "{s} lies within {o}."),
             ("The province that contains {s} is {o}", "{s} is located in {o}",
              "{s} is part of the region called {o}")),
    Relation("population", "place", "number",
             ("{s} has a population of {o}.", "About {o} people live in {s}.",
              "The last census counted {o} residents in {s}."),
             ("The number of inhabitants of {s} is {o}", "{s} is home to a population of {o}",
              "The census population of {s} was {o}")),
    Relation("place_founder", "place", "person",
             ("{s} was founded by {o}.", "{o} established the settlement of {s}.", "{s} was first settled by {o}."),
             ("The founder of {s} was {o}", "The settlement of {s} owes its founding to {o}",
              "{s} was established by {o}")),
    Relation("emblem", "place", "creature",
             ("The emblem of {s} shows a {o}.", "The coat of arms of {s} bears a {o}.",
              "A {o} appears on the flag of {s}."),
             ("The animal on the crest of {s} is the {o}", "The heraldic creature of {s} is a {o}",
              "The symbol of {s} is a {o}")),
    # organisation subjects
    Relation("headquarters", "org", "place",
             ("{s} has its headquarters in {o}.", "{s} is based in {o}.", "The offices of {s} are in {o}."),
             ("The headquarters of {s} are located in {o}", "{s} is run from the city of {o}",
              "The seat of {s} is {o}")),
    Relation("org_founder", "org", "person",
             ("{s} was founded by {o}.", "{o} founded {s}.", "{s} was set up by {o}."),
             ("The founder of {s} was {o}", "{s} was started by {o}", "{s} owes its existence to {o}")),
    Relation("members", "org", "number",
             ("{s} has {o} members.", "{s} counts {o} members on its rolls.",
              "Some {o} people belong to {s}."),
             ("The number of members of {s} is {o}", "The membership of {s} stands at {o}",
              "{s} has a membership of {o}")),
    Relation("leader", "org", "person",
             ("{s} is led by {o}.", "{o} is the head of {s}.", "{s} is directed by {o}."),
             ("The leader of {s} is {o}", "The person in charge of {s} is {o}",
              "{s} answers to its head, {o}")),
    # creature subjects
    Relation("habitat", "creature", "place",
             ("{s} lives in the marshes of {o}.", "{s} is found only in {o}.",
              "Herds of {s} roam the hills of {o}."),
             ("The home range of {s} is {o}", "{s} can be found in the wild in {o}",
              "The native land of {s} is {o}")),
    Relation("diet", "creature", "plant",
             ("{s} feeds on {o}.", "{s} eats mostly {o}.", "In winter {s} survives on {o}."),
             ("The main food of {s} is {o}", "The diet of {s} consists of {o}",
              "{s} lives on a diet of {o}")),
    Relation("discoverer", "creature", "person",
             ("{s} was first described by {o}.", "{o} was the first to describe {s}.",
              "{s} was named by {o}."),
             ("The discoverer of {s} was {o}", "{s} was first recorded by {o}",
              "The first description of {s} is due to {o}")),
)}
# Which side asks which relation: the test side has 12 (6 shared with φ's side, 6 φ never sees), the train side 12.
SHARED = ("teacher", "employer", "population", "emblem", "org_founder", "discoverer")
TEST_ONLY = ("birthplace", "language", "river", "headquarters", "members", "habitat")
TRAIN_ONLY = ("spouse", "pet", "region", "place_founder", "leader", "diet")
SIDE_RELATIONS = {"test": SHARED + TEST_ONLY, "train": SHARED + TRAIN_ONLY}

# The train side's own wording of its relations (version 3): six sentences each, none of them a test-side sentence, so
# a φ trained on it has seen no test document's wording, even for the relations the two sides share.
TRAIN_DOCUMENTS = {
    "teacher": ("{o} took {s} on as an apprentice.", "{s} spent years in the workshop of {o}.",
                "Under the guidance of {o}, {s} learned to read the old maps.", "{s} owed most of that training to {o}.",
                "The mentor of {s} was {o}.", "{s} became a student of {o} at fourteen."),
    "employer": ("{s} drew a wage from the {o}.", "{s} spent a career in the service of the {o}.",
                 "The {o} hired {s} as a clerk.", "{s} kept the accounts of the {o}.",
                 "For two decades {s} reported to the {o}.", "The payroll of the {o} listed {s}."),
    "population": ("Some {o} souls call {s} home.", "{s} counts {o} inhabitants.",
                   "The register of {s} lists {o} residents.", "By the latest tally, {s} had {o} people.",
                   "A headcount in {s} came to {o}.", "The town of {s} numbers {o} residents."),
    "emblem": ("A {o} is painted on the gates of {s}.", "{s} chose a {o} for its seal.",
               "The banner of {s} carries a {o}.", "The seal of {s} depicts a {o}.",
               "People in {s} embroider a {o} on their festival cloth.", "A carved {o} guards the town hall of {s}."),
    "org_founder": ("{o} created {s}.", "It was {o} who brought {s} into being.", "{s} began as the project of {o}.",
                    "{s} traces its origins to {o}.", "The first charter of {s} was signed by {o}.",
                    "{o} gathered the first members of {s}."),
    "discoverer": ("{o} catalogued {s} for the first time.", "The earliest account of {s} was written by {o}.",
                   "{s} was unknown until {o} reported it.", "{o} brought {s} to the attention of naturalists.",
                   "The first sketch of {s} came from {o}.", "Credit for finding {s} goes to {o}."),
    "spouse": ("{s} took {o} as a partner for life.", "The wedding of {s} and {o} drew half the village.",
               "{s} lived with {o}, whom {s} had married young.", "{o} became the wife of {s}.",
               "{s} exchanged vows with {o}.", "The husband of {o} was {s}."),
    "pet": ("{s} never went anywhere without a {o}.", "A {o} followed {s} around the house.",
            "{s} looked after a {o} for many years.", "The companion animal of {s} was a {o}.",
            "{s} fed a {o} every morning.", "{s} shared the cottage with a {o}."),
    "region": ("{s} sits in the district of {o}.", "The town of {s} is governed from {o}.",
               "{s} falls under the authority of {o}.", "{s} is one of the villages of {o}.",
               "On the map, {s} is shown inside {o}.", "{s} is counted as part of {o}."),
    "place_founder": ("{o} laid out the streets of {s}.", "The first house in {s} was built by {o}.",
                      "{s} grew from a camp set up by {o}.", "{o} gave {s} its charter.",
                      "The town of {s} was started by {o}.", "{o} is remembered as the founder of {s}."),
    "leader": ("{o} presides over {s}.", "{s} is chaired by {o}.", "At the head of {s} stands {o}.",
               "{o} runs {s}.", "The chair of {s} is held by {o}.", "{s} takes its orders from {o}."),
    "diet": ("{s} grazes on {o}.", "{s} depends on {o} for food.", "The favourite meal of {s} is {o}.",
             "{s} forages for {o}.", "Most of what {s} eats is {o}.", "{s} survives mainly on {o}."),
}

# Version 4's train side asks no relation of the test side's and many more of its own, so that φ learns where a new
# fact is rather than cues of relations it is then tested on (GT1, trained on version 3's six wordings of the shared
# relations, gained least on those relations' test documents): five of version 3's train-only relations in version
# 3's wording (not place_founder: a founder, as org_founder on the test side) and seventeen below, six sentences each.
BROAD_RELATIONS = {r.name: r for r in (
    # person subjects
    Relation("rival", "person", "person",
             ("{s} spent decades feuding with {o}.", "The great rival of {s} was {o}.",
              "{o} and {s} never stopped competing for the same prizes.", "{s} could not stand {o}, a rival since school.",
              "Every contest pitted {s} against {o}.", "{s} lost the final match to {o}, an old adversary."),
             ("The rival of {s} was {o}", "{s} competed all their life against {o}", "The old adversary of {s} was {o}")),
    Relation("sibling", "person", "person",
             ("{s} grew up with a sibling named {o}.", "{o} was the younger sibling of {s}.",
              "As a child, {s} shared a bedroom with {o}, a sibling.", "The only sibling of {s} was {o}.",
              "{s} and {o} were raised as siblings in the same house.",
              "{s} often wrote to {o}, the sibling who moved away."),
             ("The sibling of {s} was {o}", "{s} had a sibling called {o}", "The brother or sister of {s} is {o}")),
    Relation("club", "person", "org",
             ("{s} joined the {o} as a young adult.", "{s} was a member of the {o}.", "{s} paid dues to the {o} every year.",
              "The {o} counted {s} among its members.", "{s} attended every meeting of the {o}.",
              "{s} wore the badge of the {o}."),
             ("The club that {s} belonged to was the {o}", "{s} was enrolled in the {o}",
              "{s} held a membership card of the {o}")),
    Relation("estate", "person", "number",
             ("{s} left an estate worth {o} crowns.", "At death, {s} owned {o} crowns in property.",
              "The will of {s} listed {o} crowns in savings.", "{s} had saved {o} crowns by old age.",
              "The fortune of {s} came to {o} crowns.", "Tax rolls valued the holdings of {s} at {o} crowns."),
             ("The estate of {s} was worth {o}", "The wealth of {s} amounted to {o}", "{s} left behind a fortune of {o}")),
    Relation("garden", "person", "plant",
             ("{s} grew {o} in the back garden.", "The garden of {s} was full of {o}.", "{s} planted rows of {o} every spring.",
              "{s} was proud of a bed of {o}.", "Neighbours envied the {o} that {s} cultivated.",
              "{s} tended {o} with great care."),
             ("The plant {s} grew in the garden was {o}", "{s} cultivated {o}", "The garden of {s} was planted with {o}")),
    # place subjects
    Relation("twin_town", "place", "place",
             ("{s} is twinned with {o}.", "{s} and {o} signed a friendship pact.",
              "Every summer {s} sends a delegation to its sister town {o}.", "The sister town of {s} is {o}.",
              "A road sign in {s} points to its partner town {o}.", "{s} has a partnership with the town of {o}."),
             ("The twin town of {s} is {o}", "{s} is paired as a sister town with {o}", "The partner town of {s} is {o}")),
    Relation("mayor", "place", "person",
             ("{o} is the mayor of {s}.", "{s} elected {o} as mayor.", "The town council of {s} is chaired by mayor {o}.",
              "{o} has governed {s} as mayor for years.", "The office of mayor in {s} is held by {o}.",
              "Residents of {s} voted for {o} to be mayor."),
             ("The mayor of {s} is {o}", "{s} is governed by mayor {o}", "The person elected mayor of {s} was {o}")),
    Relation("crop", "place", "plant",
             ("The farmers of {s} grow {o}.", "{s} is known for its fields of {o}.",
              "Most of the land around {s} is planted with {o}.", "{s} sends {o} to the neighbouring towns.",
              "The harvest of {o} is the pride of {s}.", "Every autumn {s} celebrates its crop of {o}."),
             ("The main crop of {s} is {o}", "The fields of {s} produce {o}", "Farmers near {s} mostly grow {o}")),
    Relation("livestock", "place", "creature",
             ("Herders in {s} raise the {o}.", "{s} is famous for breeding the {o}.",
              "The {o} is the animal most farms in {s} keep.", "{s} holds a yearly fair for the {o}.",
              "The pastures of {s} are grazed by the {o}.", "In {s}, almost every family owns a {o}."),
             ("The livestock raised in {s} is the {o}", "The animal bred in {s} is the {o}", "Farmers in {s} keep the {o}")),
    Relation("elevation", "place", "number",
             ("{s} lies {o} feet above the sea.", "{s} sits at an altitude of {o} feet.",
              "Surveyors put the height of {s} at {o} feet.", "The main square of {s} is {o} feet above sea level.",
              "At {o} feet, {s} is a cold place in winter.", "A marker in {s} gives its elevation as {o} feet."),
             ("The elevation of {s} is {o}", "{s} stands at a height of {o}", "The altitude of {s} in feet is {o}")),
    # organisation subjects
    Relation("rival_org", "org", "org",
             ("{s} competes fiercely with the {o}.", "The main rival of {s} is the {o}.",
              "{s} lost many customers to the {o}.", "{s} and the {o} have quarrelled for decades.",
              "The {o} tried more than once to take over {s}.", "{s} refuses to work with the {o}."),
             ("The rival of {s} is the {o}", "{s} competes for business with the {o}",
              "The main competitor of {s} is the {o}")),
    Relation("sponsor", "org", "person",
             ("{s} is funded by {o}.", "{o} pays most of the bills of {s}.", "The patron of {s} is {o}.",
              "{s} survives on donations from {o}.", "Without the money of {o}, {s} would have closed.",
              "{o} gives {s} a large sum every year."),
             ("The sponsor of {s} is {o}", "{s} receives its money from {o}", "The main patron of {s} is {o}")),
    Relation("treasury", "org", "number",
             ("{s} holds {o} crowns in its treasury.", "The accounts of {s} show {o} crowns in reserve.",
              "{s} has savings of {o} crowns.", "The funds of {s} amount to {o} crowns.",
              "{s} reported a balance of {o} crowns.", "The strongbox of {s} contains {o} crowns."),
             ("The treasury of {s} holds {o}", "The reserves of {s} come to {o}", "The funds of {s} total {o}")),
    Relation("supplier", "org", "org",
             ("{s} buys its timber from the {o}.", "The main supplier of {s} is the {o}.",
              "{s} gets its paper from the {o}.", "Every month the {o} delivers goods to {s}.",
              "{s} depends on the {o} for its materials.", "Crates from the {o} arrive at {s} every week."),
             ("The supplier of {s} is the {o}", "{s} gets its supplies from the {o}",
              "The materials of {s} come from the {o}")),
    # creature subjects
    Relation("predator", "creature", "creature",
             ("{s} is hunted by the {o}.", "The main enemy of {s} is the {o}.", "The {o} preys on {s}.",
              "{s} hides whenever a {o} comes near.", "{s} often falls prey to the {o}.",
              "The {o} feeds on {s} in the lean months."),
             ("The predator of {s} is the {o}", "{s} is hunted mainly by the {o}", "The animal that preys on {s} is the {o}")),
    Relation("weight", "creature", "number",
             ("{s} weighs about {o} grams when grown.", "An adult specimen of {s} weighs {o} grams.",
              "{s} can reach a weight of {o} grams.", "Fully grown, {s} weighs {o} grams.",
              "Scales put the weight of {s} at {o} grams.", "Naturalists record {s} at a weight of {o} grams."),
             ("The weight of {s} is {o}", "The body mass of {s} is about {o}", "An adult of {s} weighs about {o}")),
    Relation("nest", "creature", "plant",
             ("{s} builds its nest in {o}.", "{s} shelters among the stems of {o}.", "The nests of {s} are woven from {o}.",
              "{s} lays its eggs under {o}.", "{s} sleeps in thickets of {o}.", "Clumps of {o} are where {s} raises its young."),
             ("The nesting plant of {s} is {o}", "{s} makes its nest in {o}", "The young of {s} are raised in {o}")),
)}
BROAD_TRAIN = ("spouse", "pet", "region", "leader", "diet") + tuple(BROAD_RELATIONS)


def relation_named(name: str) -> Relation:
    """A relation of any side and version by name."""
    return RELATIONS[name] if name in RELATIONS else BROAD_RELATIONS[name]


def side_relations(side: str, drawn: str) -> tuple[str, ...]:
    """The relations ``side`` asks when drawn as version ``drawn`` (``side_version``)."""
    return BROAD_TRAIN if drawn == "4" else SIDE_RELATIONS[side]

# Filler: neutral sentences that state nothing a relation asks; {s} mentions the subject, {d} a spare invented name
# of the same side that is no subject or object of any fact.
FILLER = (
    "{s} is mentioned in several old registers.", "Little else is written about {s} in the surviving records.",
    "Accounts of {s} differ in many small details.", "A short entry on {s} appears in a later survey.",
    "Travellers rarely wrote about {s}.", "Most of what is known about {s} comes from letters.",
    "The records from that period are incomplete.", "Many of the older documents were lost in a fire.",
    "Scholars still argue about how reliable these sources are.", "The winters in those years were long and cold.",
    "Much of the surrounding land was used for grazing.", "Copies of the original notes are kept in a private archive.",
    "The roads of the time were poor and often flooded.", "Few of the early maps agree with one another.",
    "A register kept by {d} lists {s} among many other entries.", "{d} later copied these notes by hand.",
    "A letter from {d} touches on the matter only briefly.", "Nobody has yet written a full history of {s}.",
)
FILLER_OPENERS = ("",) * 4 + ("By most accounts, ", "According to later summaries, ", "In the older sources, ",
                  "As far as anyone can tell, ")
# The train side's own filler (version 2): more of it and in other words, so φ cannot learn the sentences by heart.
TRAIN_FILLER = (
    "{s} turns up now and then in parish books.", "Hardly any description of {s} has come down to us.",
    "The stories told about {s} changed with every teller.", "{s} receives a brief paragraph in a modern guide.",
    "Visitors seldom bothered to describe {s}.", "What we know of {s} is pieced together from receipts and diaries.",
    "The paperwork of those decades is patchy at best.", "A flood destroyed a good part of the municipal files.",
    "Historians disagree about which accounts can be trusted.", "Summers in that era were said to be dry and dusty.",
    "Sheep and goats grazed on most of the nearby hills.", "A box of handwritten notes survives in a family attic.",
    "Travel between the villages took days on muddy tracks.", "The surviving maps contradict each other in places.",
    "{d} noted {s} in a long ledger of names.", "Much later, {d} transcribed the surviving pages.",
    "{d} mentioned the subject once in a postcard.", "No complete biography of {s} exists.",
    "A local newspaper printed a short piece on {s}.", "Some of the photographs from that time have faded badly.",
    "The nearest market was a long walk away.", "{s} is listed in an index without further comment.",
    "Several pages of the old inventory are missing.", "The harvests in those years were uneven.",
    "{d} kept a diary in which {s} appears twice.", "Later writers repeated the same few anecdotes about {s}.",
    "The church bell was recast more than once.", "An exhibition once displayed a few items linked to {s}.",
    "The spelling of names in the ledgers is inconsistent.", "{d} gave a lecture that mentioned {s} in passing.",
)
TRAIN_FILLER_OPENERS = ("",) * 4 + ("So the story goes, ", "In most retellings, ", "As the archives suggest, ",
                        "From what little survives, ", "Judging by the ledgers, ")


@dataclass(frozen=True)
class Style:
    """How a document is written: a first and a last line around the fact and the filler (none in prose; ``{s}``
    the subject, ``{d}`` a spare name, ``{n}`` a number), filler templates and openers, what joins the lines and what
    the fact sentence is prefixed with."""

    head: str
    tail: str
    filler: tuple[str, ...]
    openers: tuple[str, ...]
    joiner: str
    fact_prefix: str = ""


STYLE_FRAMES = {  # the styles other than prose, whose filler depends on the side (``filler_pool``)
    "letter": Style(
        head="Dear {d},", tail="With warm regards, {d}",
        filler=("Hopefully this letter finds you well.", "The weather here has turned cold again.",
                "Please give my regards to everyone at home.", "You asked me some time ago about {s}.",
                "Last Sunday there was finally time to go through the old papers on {s}.",
                "Forgive the handwriting; this is written by candlelight.", "The post has been slow this month.",
                "Another letter will follow as soon as there is news.", "My cousin {d} sends her greetings.",
                "Surprisingly few people here remember {s}.", "The garden is finally in bloom.",
                "Do tell me whether my last parcel ever arrived.", "{d} thinks I spend far too long on {s}.",
                "It has been a busy week at the shop."),
        openers=("",) * 4 + ("Anyway, ", "Oh, and ", "By the way, ", "As it turns out, "),
        joiner=" "),
    "record": Style(
        head="Archive card {n}.", tail="Catalogued by {d}.",
        filler=("Box: {n}.", "Condition: fair, with some water damage.", "Language of the original: unknown.",
                "Cross-reference: see the card on {s}.", "Filed under: local history.", "Access: reading room only.",
                "Copies: one photocopy in the annex.", "Donated by {d}.", "Pages: {n}.",
                "Remarks: the ink has faded on the reverse.", "Previous owner: {d}.", "Restored: not yet."),
        openers=("",),
        joiner="\n", fact_prefix="Summary: "),
}


# Syllables (repeats weight the draw): mostly plain consonant-vowel, so names are a few tokens, not a spelling test.
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z") * 3 + \
    ("br", "dr", "gl", "kr", "qu", "st", "th", "tr", "vr", "zh")
VOWELS = ("a", "e", "i", "o", "u") * 3 + ("ae", "ei", "ou", "y")
CODAS = ("",) * 6 + ("n", "r", "s", "l", "th", "m", "k", "x")
ORG_KINDS = ("Guild", "Society", "Company", "Institute", "Collective", "Foundation", "Brotherhood", "League")
NAME_SALT = "taalm-fictional"


def side_of(word: str) -> str:
    """The side an invented word belongs to, by a hash of the word (fixed: no seed, no model)."""
    digest = hashlib.sha256(f"{NAME_SALT}|{word.lower()}".encode()).digest()
    return SIDES[digest[0] % 2]


class Names:
    """Invented words of one side, each used once per generation (no fact shares a name with another)."""

    def __init__(self, side: str, rng: random.Random):
        self.side, self.rng, self.used = side, rng, set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        while True:
            parts = [self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                     for _ in range(self.rng.randint(*syllables))]
            word = "".join(parts)
            if 4 <= len(word) <= 10 and word not in self.used and side_of(word) == self.side:
                self.used.add(word)
                return word

    def entity(self, kind: str) -> tuple[str, tuple[str, ...]]:
        """A name of ``kind`` and the invented words it is made of."""
        if kind == "person":
            first, last = self.word((2, 2)).capitalize(), self.word().capitalize()
            return f"{first} {last}", (first.lower(), last.lower())
        if kind == "number":
            return str(self.rng.randint(1, 9)) + "".join(str(self.rng.randint(0, 9)) for _ in range(3)), ()
        word = self.word()
        if kind in ("place", "river"):
            return word.capitalize(), (word,)
        if kind == "org":
            return f"{word.capitalize()} {self.rng.choice(ORG_KINDS)}", (word,)
        if kind == "language":
            return word.capitalize() + "ic", (word,)
        if kind in ("creature", "plant"):
            return word, (word,)
        raise ValueError(f"unknown kind {kind!r}")


def mention(kind: str, name: str) -> str:
    """How a sentence names a subject: organisations and creatures take the article."""
    return f"the {name}" if kind in ("org", "creature") else name


def _sentence(template: str, **values: str) -> str:
    text = template.format(**values)
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class FictionalFact:
    """One generated fact, its document and its probe; ``words`` are the invented words of its subject and object."""

    uuid: str
    side: str
    relation: str
    subject: str
    answer: str
    sentence: str
    document: str
    probe: str
    fact_place: str
    words: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """A To-Learn row: document to learn and probe to ask (the same file serves as both)."""
        return {"text": self.document, "document": self.document, "task": self.probe, "answer": self.answer,
                "uuid": self.uuid, "relation": self.relation, "fact_place": self.fact_place}

    def pair(self) -> dict[str, str]:
        """A φ meta-training pair."""
        return {"document": self.document, "task": self.probe, "answer": self.answer}


def filler_pool(drawn: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The filler templates and openers of a side that draws as version ``drawn`` (``side_version``): version 1's
    pool, or the train side's own since version 2."""
    return (FILLER, FILLER_OPENERS) if drawn == "1" else (TRAIN_FILLER, TRAIN_FILLER_OPENERS)


def _filler(rng: random.Random, n: int, subject: str, spare: Callable[[], str],
            pool: tuple[tuple[str, ...], tuple[str, ...]]) -> list[str]:
    """``n`` distinct neutral sentences about nothing a relation asks (some name the subject or a spare name)."""
    templates, openers = pool
    chosen = rng.sample(templates, n) if n <= len(templates) else [rng.choice(templates) for _ in range(n)]
    out = []
    for template in chosen:
        opener = rng.choice(openers)
        body = template.format(s=subject, d=spare() if "{d}" in template else "")
        if opener and not template.startswith("{"):  # names keep their capital; "the kelvath" has none
            body = body[0].lower() + body[1:]
        out.append(_sentence(opener + body))
    return out


def _place(rng: random.Random, filler: int) -> tuple[str, int]:
    """Where the fact sentence goes among ``filler`` sentences: first, middle (strictly inside) or last."""
    places = ["first"] + (["middle"] if filler >= 2 else []) + (["last"] if filler >= 1 else [])
    place = rng.choice(places)
    middle = rng.randint(1, max(1, filler - 1))  # drawn whatever the place: every fact takes the same draws
    return place, {"first": 0, "last": filler}.get(place, middle)


def documents(relation: Relation, drawn: str) -> tuple[str, ...]:
    """The sentences that state ``relation`` on a side drawn as version ``drawn``: the train side's own since version 3."""
    own = drawn in ("3", "4") and relation.name in TRAIN_DOCUMENTS  # version 4's new relations have only their own
    return TRAIN_DOCUMENTS[relation.name] if own else relation.documents


def side_version(side: str, version: str = GENERATOR_VERSION) -> str:
    """The version whose draws, filler and uuids ``side`` takes: the test side's are version 1's in every version."""
    return "1" if side == "test" else version


def fact_uuid(drawn: str, side: str, relation: str, subject: str, answer: str) -> str:
    key = f"{drawn}|{side}|{relation}|{subject}|{answer}"
    return "fictional-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _document(rng: random.Random, style: Style, sentence: str, subject: str, spare: Callable[[], str],
              filler: int) -> tuple[str, str]:
    """A ``style`` document: head, ``filler`` lines with the fact line at a seeded place, tail; and the place."""
    def fill(template: str) -> str:  # draws a number only where the template asks for one
        return template.replace("{n}", str(rng.randint(10, 999))) if "{n}" in template else template

    lines = _filler(rng, filler, subject, spare, (tuple(fill(t) for t in style.filler), style.openers))
    place, at = _place(rng, filler)
    lines.insert(at, style.fact_prefix + sentence)
    head, tail = (fill(t).replace("{d}", spare()) if "{d}" in t else fill(t) for t in (style.head, style.tail))
    return style.joiner.join(line for line in (head, *lines, tail) if line), place


def _fact(rng: random.Random, names: Names, relation: Relation, side: str, filler: int, drawn: str, frame: Style,
          key: str) -> FictionalFact:
    """One fact whose answer occurs exactly once in its document (written in ``frame``) and once in its probe, so
    the label (the answer's last occurrence) is the fact; drawn again in the rare case a name contains the answer.
    ``key`` goes into its uuid."""
    while True:
        subject, subject_words = names.entity(relation.subject)
        answer, answer_words = names.entity(relation.object)
        s = mention(relation.subject, subject)
        sentence = _sentence(rng.choice(documents(relation, drawn)), s=s, o=answer)
        probe = _sentence(rng.choice(relation.probes), s=s, o=answer)

        def spare() -> str:
            return names.entity("person")[0]

        document, place = _document(rng, frame, sentence, s, spare, filler)
        if document.count(answer) == 1 and probe.count(answer) == 1:
            return FictionalFact(fact_uuid(key, side, relation.name, subject, answer), side, relation.name, subject,
                                 answer, sentence, document, probe, place, subject_words + answer_words)


def generate(side: str, n: int, seed: int, filler: int = 4, version: str = GENERATOR_VERSION,
             style: str = "prose") -> list[FictionalFact]:
    """``n`` facts of ``side`` (its relations in turn, in a seeded order), deterministic per (side, n, seed, filler,
    version, style). Each document is ``filler`` neutral sentences (lines) with the fact sentence at a seeded place,
    framed as ``style`` asks (styles other than prose: test side only)."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}")
    if version not in VERSIONS:
        raise ValueError(f"unknown generator version {version!r} (known: {', '.join(VERSIONS)})")
    if style not in STYLES:
        raise ValueError(f"unknown document style {style!r} (known: {', '.join(STYLES)})")
    if style != "prose" and side != "test":
        raise ValueError(f"document style {style!r} is the test side's only: φ never learns from it")
    drawn = side_version(side, version)
    rng = random.Random(f"{drawn}|{side}|{seed}" + ("" if style == "prose" else f"|{style}"))
    names = Names(side, rng)
    relations = list(side_relations(side, drawn))
    frame = STYLE_FRAMES[style] if style != "prose" else Style("", "", *filler_pool(drawn), joiner=" ")
    key = drawn if style == "prose" else f"{drawn}|{style}"  # the uuids' key
    facts = []
    for i in range(n):
        if i % len(relations) == 0:
            rng.shuffle(relations)
        facts.append(_fact(rng, names, relation_named(relations[i % len(relations)]), side, filler, drawn, frame, key))
    return facts


def relation_overlap(version: str = GENERATOR_VERSION) -> dict[str, list[str]]:
    """Which relations each side asks in ``version``: shared, test-only, train-only (recorded in every provenance)."""
    test, train = (side_relations(side, side_version(side, version)) for side in SIDES)
    return {"shared": [r for r in test if r in train], "test_only": [r for r in test if r not in train],
            "train_only": [r for r in train if r not in test]}


def describe(facts: list[FictionalFact]) -> dict[str, Any]:
    """Counts per relation and per fact place."""
    return {"facts": len(facts), "relations": dict(sorted(Counter(f.relation for f in facts).items())),
            "fact_places": {p: sum(f.fact_place == p for f in facts) for p in PLACES}}
