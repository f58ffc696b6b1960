"""A deterministic mixed-length text corpus for tools/compare, built locally.

Real passage collections are long-tailed: most texts are a sentence or two, a few are long
paragraphs that hit the model's max_seq_length. The corpus imitates that with target token
lengths ([CLS] and [SEP] included) drawn from a log-normal distribution:

    length = round(exp(normal(log(MEDIAN_TOKENS), SIGMA)))  clipped to [MIN_TOKENS, MAX_TOKENS]

With MEDIAN_TOKENS 40 and SIGMA 0.8 about two thirds of the texts have 10-60 tokens, one in
eight has more than 100, about 1% more than 256, and the rare texts above 512 tokens are cut
by every engine's truncation at max_seq_length (512 for e5-small-v2).

Texts are sequences of English words (the ASCII words of tests/fixtures/texts.json plus a
fixed list of common words below) with sentence punctuation. The BERT tokenizer splits on
whitespace before WordPiece, so a text's token count is the sum of its space-separated chunks'
token counts; each text is assembled to hit its target exactly and then checked with the real
tokenizer (no truncation) of the model. Everything comes from a seeded numpy generator: the same
seed and tokenizer give the same corpus, byte for byte, on every machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from common import REPO_DIR

SEED = 20240604
MEDIAN_TOKENS = 40
SIGMA = 0.8
MIN_TOKENS = 6
MAX_TOKENS = 640  # above the largest max_seq_length (512): a few texts exercise truncation

FIXTURE_TEXTS = REPO_DIR / "tests" / "fixtures" / "texts.json"

# Common English words; together with the fixture texts' words they make the vocabulary.
COMMON_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there one all we their has been would when if will more no out so
up said what its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through
back years where much your way well down should because each just those people how too little
state good very make world still own see men work long get here between both life being under
never day same another know while last might us great old year off come since against go came
right used take three water city river market energy system research study report health school
family history music science company government country house company service students teacher
protein guideline average requirement training marathon chart women grams recommend daily search
model vectors meaning documents query results nearest cosine similarity collection lighthouse
northern cape winter storm cargo ships harbour coast village engineers bridge railway station
museum garden library island mountain forest weather summer morning evening problem question
answer example number figure table section chapter data analysis method approach performance
""".split()


@dataclass
class Corpus:
    texts: list[str]
    tokens: list[int]  # token count of each text after truncation at max_seq_length
    untruncated_tokens: list[int]
    seed: int
    sha256: str  # of the texts joined by "\n", as written to the corpus file

    def summary(self) -> dict:
        t = np.asarray(self.tokens)
        return {
            "texts": len(self.texts),
            "tokens": int(t.sum()),
            "mean_tokens": round(float(t.mean()), 1),
            "median_tokens": float(np.median(t)),
            "p90_tokens": float(np.percentile(t, 90)),
            "max_tokens": int(t.max()),
            "share_10_to_60": round(float(np.mean((t >= 10) & (t <= 60))), 3),
            "share_over_100": round(float(np.mean(t > 100)), 3),
            "truncated": int(sum(u > k for u, k in zip(self.untruncated_tokens, self.tokens))),
            "seed": self.seed,
            "sha256": self.sha256,
            "distribution": f"lognormal(median {MEDIAN_TOKENS}, sigma {SIGMA}) clipped to "
                            f"[{MIN_TOKENS}, {MAX_TOKENS}] tokens incl. [CLS]/[SEP]",
        }

    def write(self, path: Path) -> None:
        path.write_text("\n".join(self.texts) + "\n", encoding="utf-8")


def word_list() -> list[str]:
    """Lower-case ASCII words, fixture words first, deduplicated in a fixed order."""
    fixture = json.loads(FIXTURE_TEXTS.read_text(encoding="utf-8"))
    words: list[str] = []
    for text in fixture:
        words += re.findall(r"[A-Za-z]+", text)
    words += COMMON_WORDS
    seen: dict[str, None] = {}
    for w in words:
        w = w.lower()
        if len(w) > 1 or w in ("a", "i"):
            seen.setdefault(w, None)
    return list(seen)


def build(tokenizer_file: Path, n_texts: int, max_seq_length: int, seed: int = SEED) -> Corpus:
    """Generate n_texts texts whose untruncated token counts follow the distribution above."""
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.no_truncation()
    rng = np.random.default_rng(seed)
    targets = np.exp(rng.normal(np.log(MEDIAN_TOKENS), SIGMA, size=n_texts))
    targets = np.clip(np.rint(targets), MIN_TOKENS, MAX_TOKENS).astype(int)

    words = word_list()
    cost = {w: len(tok.encode(w, add_special_tokens=False).ids) for w in words}
    cost.update({w + p: cost[w] + 1 for w in words for p in (".", ",")})  # punctuation is its own token
    single = [w for w in words if cost[w] == 1]  # to fill the last slots exactly

    texts = []
    for target in targets:
        need = int(target) - 2  # [CLS] and [SEP]
        parts: list[str] = []
        used = 0
        sentence_left = int(rng.integers(6, 20))  # words until the next full stop
        while used < need:
            w = words[int(rng.integers(len(words)))]
            if not parts or parts[-1].endswith("."):
                w = w.capitalize()  # same tokens: the tokenizer lowercases
            sentence_left -= 1
            if sentence_left <= 0 and need - used >= cost[w.lower()] + 1:
                w += "."
                sentence_left = int(rng.integers(6, 20))
            elif rng.random() < 0.06 and need - used >= cost[w.lower()] + 1:
                w += ","
            c = cost[w.lower()]
            if used + c > need:
                w, c = single[int(rng.integers(len(single)))], 1
            parts.append(w)
            used += c
        texts.append(" ".join(parts))

    # Check with the real tokenizer: the chunk arithmetic must have hit every target exactly.
    full = [len(e.ids) for e in tok.encode_batch(texts)]
    bad = [(i, f, int(t)) for i, (f, t) in enumerate(zip(full, targets)) if f != t]
    if bad:
        raise RuntimeError(f"corpus token counts differ from targets for {len(bad)} texts, first {bad[:3]}")
    blob = ("\n".join(texts) + "\n").encode("utf-8")
    return Corpus(texts=texts, tokens=[min(f, max_seq_length) for f in full], untruncated_tokens=full,
                  seed=seed, sha256=hashlib.sha256(blob).hexdigest())
