"""The LangChain adapter with langchain-core installed."""

from __future__ import annotations

import asyncio

import numpy as np
from langchain_core.embeddings import Embeddings

from e5embed.langchain import E5embedEmbeddings

from conftest import model_dir


def test_langchain_adapter(minilm):
    emb = E5embedEmbeddings(embedder=minilm)
    assert isinstance(emb, Embeddings)
    docs = ["The CDC recommends 46 grams of protein a day.", "The river flows north."]
    d = emb.embed_documents(docs)
    assert isinstance(d, list) and isinstance(d[0], list) and isinstance(d[0][0], float)
    assert np.array_equal(np.asarray(d, dtype=np.float32), minilm.encode_passages(docs))
    q = emb.embed_query("how much protein should a female eat")
    assert np.array_equal(np.asarray(q, dtype=np.float32), minilm.encode_queries("how much protein should a female eat"))
    # LangChain's async defaults run the sync methods in an executor.
    assert asyncio.run(emb.aembed_query("how much protein should a female eat")) == q
    assert asyncio.run(emb.aembed_documents(docs)) == d


def test_langchain_without_prompts():
    emb = E5embedEmbeddings(str(model_dir("paraphrase-MiniLM-L3-v2")), threads=1,
                            query_prompt_name=None, document_prompt_name=None)
    assert np.array_equal(np.asarray(emb.embed_query("plain text"), dtype=np.float32),
                          emb.embedder.encode("plain text"))
    assert emb.embed_documents(["plain text"]) == [emb.embed_query("plain text")]
