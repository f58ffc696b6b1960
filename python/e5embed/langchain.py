"""A LangChain ``Embeddings`` adapter for e5embed.

    from e5embed.langchain import E5embedEmbeddings

    emb = E5embedEmbeddings("intfloat/e5-small-v2")
    vectors = emb.embed_documents(["first passage", "second passage"])   # list[list[float]]
    query = emb.embed_query("what is in the first passage?")              # list[float]

Documents get the model's ``passage`` prompt and queries its ``query`` prompt (E5's
``"passage: "`` / ``"query: "``, or the model's own prompts of those names); pass
``document_prompt_name=None`` / ``query_prompt_name=None`` for a model trained without them
(e.g. all-MiniLM-L6-v2). Needs ``langchain-core`` (``pip install langchain-core``).
"""

from __future__ import annotations

from typing import Any, List, Optional

from langchain_core.embeddings import Embeddings

from ._e5embed import Embedder

__all__ = ["E5embedEmbeddings"]


class E5embedEmbeddings(Embeddings):
    """LangChain embeddings backed by an ``e5embed.Embedder``.

    Args:
        model: a model directory or hub id, as for ``Embedder``; ignored when ``embedder`` is given.
        embedder: an already loaded ``Embedder`` to share (one model in memory for many users).
        query_prompt_name: prompt for ``embed_query`` (default ``"query"``; ``None``: no prompt).
        document_prompt_name: prompt for ``embed_documents`` (default ``"passage"``; ``None``: no prompt).
        **kwargs: passed to ``Embedder`` (``precision``, ``threads``, ``max_batch_tokens``).
    """

    def __init__(
        self,
        model: str = "intfloat/e5-small-v2",
        *,
        embedder: Optional[Embedder] = None,
        query_prompt_name: Optional[str] = "query",
        document_prompt_name: Optional[str] = "passage",
        **kwargs: Any,
    ) -> None:
        self.embedder = embedder if embedder is not None else Embedder(model, **kwargs)
        self.query_prompt_name = query_prompt_name
        self.document_prompt_name = document_prompt_name

    def _encode(self, texts: Any, prompt_name: Optional[str]):
        # prompt="" stops the model's default prompt; a name picks that prompt.
        if prompt_name is None:
            return self.embedder.encode(texts, prompt="")
        return self.embedder.encode(texts, prompt_name=prompt_name)

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        """Embeds documents (one list of floats per text, in order)."""
        return self._encode(list(texts), self.document_prompt_name).tolist()

    def embed_query(self, text: str) -> List[float]:
        """Embeds one query."""
        return self._encode(text, self.query_prompt_name).tolist()
