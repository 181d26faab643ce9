"""A small, seeded, offline text corpus: queries and passages for fixtures, checks and benchmarks.

Real checkpoints cannot be downloaded here, and neither can data sets, so verification and
benchmarks draw (query, passage) pairs from hand-written sentences recombined with a seeded RNG.
"""

from __future__ import annotations

import random

TOPICS: dict[str, tuple[str, list[str]]] = {
    "moon": (
        "Who was the first person to walk on the moon?",
        [
            "Neil Armstrong was the first person to walk on the moon in July 1969.",
            "Apollo 11 landed in the Sea of Tranquility and Buzz Aldrin followed Armstrong.",
            "Michael Collins stayed in lunar orbit aboard the command module Columbia.",
            "The lunar module Eagle touched down after a tense descent with little fuel left.",
        ],
    ),
    "python": (
        "How do I read a file line by line in Python?",
        [
            "In Python you can iterate over an open file object to read it one line at a time.",
            "Use a with statement so the file is closed even if an exception is raised.",
            "The readlines method loads every line into memory, which is slow for huge files.",
            "Pass encoding='utf-8' to open when the file contains non-ASCII text.",
        ],
    ),
    "coffee": (
        "What is the best water temperature for brewing coffee?",
        [
            "Coffee brews best with water between 90 and 96 degrees Celsius.",
            "Boiling water can scorch the grounds and extract bitter compounds.",
            "A pour-over needs a steady, slow stream of water over the bed of grounds.",
            "Espresso machines force hot water through finely ground coffee at high pressure.",
        ],
    ),
    "photosynthesis": (
        "How do plants turn sunlight into energy?",
        [
            "Photosynthesis converts light, water and carbon dioxide into glucose and oxygen.",
            "Chlorophyll in the chloroplasts absorbs mostly red and blue light.",
            "The Calvin cycle fixes carbon dioxide into sugars using ATP and NADPH.",
            "Leaves exchange gases with the air through small pores called stomata.",
        ],
    ),
    "rome": (
        "When did the Western Roman Empire fall?",
        [
            "The Western Roman Empire is usually said to have fallen in 476 AD.",
            "Odoacer deposed Romulus Augustulus, the last western emperor.",
            "The Eastern Roman Empire survived as Byzantium until 1453.",
            "Economic crisis and invasions weakened Rome for centuries before its fall.",
        ],
    ),
    "vaccines": (
        "How do mRNA vaccines work?",
        [
            "mRNA vaccines instruct cells to make a harmless piece of a viral protein.",
            "The immune system learns to recognise that protein and builds antibodies.",
            "The mRNA is broken down by the cell within days and never enters the nucleus.",
            "Lipid nanoparticles protect the fragile mRNA until it reaches the cells.",
        ],
    ),
    "tides": (
        "What causes ocean tides?",
        [
            "Tides are caused mainly by the gravitational pull of the moon on the oceans.",
            "The sun also raises tides, and spring tides occur when sun and moon align.",
            "Most coasts see two high tides and two low tides every lunar day.",
            "The shape of a bay can amplify the tidal range to many metres.",
        ],
    ),
    "rust": (
        "Why does the Rust compiler complain about borrowing?",
        [
            "Rust's borrow checker forbids a mutable borrow while shared borrows are alive.",
            "Lifetimes tell the compiler how long a reference stays valid.",
            "Cloning a value sidesteps a borrow error at the cost of a copy.",
            "Interior mutability with RefCell moves borrow checks to run time.",
        ],
    ),
}

FILLER = [
    "The committee met on Tuesday to review the annual budget.",
    "Heavy rain is expected across the northern region this weekend.",
    "The museum's new wing displays modern sculpture and photography.",
    "Several startups announced funding rounds in the logistics sector.",
    "A local bakery won an award for its sourdough bread.",
    "The train schedule changes at the start of every season.",
    "Researchers published a survey of migratory bird populations.",
    "The city council approved a plan for new bicycle lanes.",
    "Ticket prices for the concert rose sharply after the announcement.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Volunteers cleaned the beach and collected plastic waste.",
    "The software update fixes a bug that drained the battery.",
    "Engineers inspected the bridge after the earthquake.",
    "The novel follows three generations of a fishing family.",
    "Quarterly earnings beat analysts' expectations by a wide margin.",
    "The football club signed a young striker from abroad.",
    "Farmers reported a strong harvest of wheat and barley.",
    "The library extended its opening hours during exams.",
    "A new species of frog was discovered in the rainforest.",
    "The airline added direct flights to three new destinations.",
]

UNICODE = [
    "Café, naïve façade — déjà vu ✓",
    "東京は日本の首都であり、人口が最も多い都市です。",
    "Москва — столица России.",
    "العربية لغة جميلة",
    "emoji 🚀🌕👩‍🚀 in text",
]


def sample_pairs(n: int, seed: int, max_sentences: int = 24) -> list[tuple[str, str]]:
    """n seeded (query, passage) pairs mixing relevant, partly relevant and unrelated passages."""
    rng = random.Random(seed)
    topics = list(TOPICS)
    sentences = [s for _, ss in TOPICS.values() for s in ss] + FILLER
    pairs: list[tuple[str, str]] = []
    for _ in range(n):
        query, relevant = TOPICS[rng.choice(topics)]
        k = rng.randint(1, max_sentences)
        body = [rng.choice(sentences) for _ in range(k)]
        if rng.random() < 0.4:
            body.insert(rng.randrange(len(body) + 1), rng.choice(relevant))
        pairs.append((query, " ".join(body)))
    return pairs


def passages_for(query_topic: str, n: int, seed: int, max_sentences: int = 24) -> tuple[str, list[str]]:
    """One query and n seeded passages for it, some relevant, for ranking checks."""
    rng = random.Random(seed)
    query, relevant = TOPICS[query_topic]
    sentences = [s for _, ss in TOPICS.values() for s in ss] + FILLER
    chunks = []
    for i in range(n):
        k = rng.randint(1, max_sentences)
        body = [rng.choice(sentences) for _ in range(k)]
        if i % 4 == 0:
            body.insert(rng.randrange(len(body) + 1), rng.choice(relevant))
        chunks.append(" ".join(body))
    return query, chunks


def mixed_chunks(n: int, seed: int = 0) -> list[str]:
    """n chunks with a realistic mix of lengths: ~20% short (~30 tokens), ~65% typical (120-300),
    ~15% over 512 tokens (the benchmarks' workload)."""
    rng = random.Random(seed)
    sentences = [s for _, ss in TOPICS.values() for s in ss] + FILLER
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.20:
            k = 2
        elif r < 0.85:
            k = rng.randint(9, 22)  # ~13 tokens a sentence
        else:
            k = rng.randint(42, 70)
        out.append(" ".join(rng.choice(sentences) for _ in range(k)))
    return out
