"""Request bodies for tools/loadtest (run with the tools venv: numpy + tokenizers).

    loadtest_corpus.py MODEL_DIR OUT_DIR N_CORPUS N_QUERIES

Writes into OUT_DIR:
  corpus.txt         N_CORPUS texts of tools/compare_corpus.py's mixed-length distribution
                     (the corpus of tools/compare, same seed), one per line
  corpus.jsonl       one /v1/embeddings body per line: {"input": text} (oha -Z)
  queries.jsonl      N_QUERIES bodies of distinct 8-token queries ([CLS] + 6 words + [SEP],
                     checked with the model's tokenizer)
  summary.json       token statistics of both
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_corpus  # noqa: E402


def main() -> None:
    model, out, n_corpus, n_queries = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    max_seq = json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"]
    c = compare_corpus.build(model / "tokenizer.json", n_corpus, max_seq)
    (out / "corpus.txt").write_text("\n".join(c.texts) + "\n")
    with open(out / "corpus.jsonl", "w") as f:
        for t in c.texts:
            f.write(json.dumps({"input": t}) + "\n")

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    words = [w for w in compare_corpus.word_list() if len(tok.encode(w, add_special_tokens=False).ids) == 1]
    rng = np.random.default_rng(compare_corpus.SEED)
    queries: list[str] = []
    seen: set[str] = set()
    while len(queries) < n_queries:
        q = " ".join(words[int(i)] for i in rng.integers(len(words), size=6))
        if q in seen:
            continue
        assert len(tok.encode(q).ids) == 8, q
        seen.add(q)
        queries.append(q)
    with open(out / "queries.jsonl", "w") as f:
        for q in queries:
            f.write(json.dumps({"input": q}) + "\n")
    summary = {"corpus": c.summary(), "corpus_sha256": c.sha256, "queries": n_queries, "query_tokens": 8}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
