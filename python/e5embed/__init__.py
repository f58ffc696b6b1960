"""e5embed: fast CPU text embeddings from a hand-optimized Rust engine.

``Embedder`` loads a BERT embedding model (a local directory in the Hugging Face layout, or a
hub id such as ``"intfloat/e5-small-v2"``) and embeds text with the sentence-transformers API::

    from e5embed import Embedder

    model = Embedder("intfloat/e5-small-v2")
    q = model.encode_queries(["how much protein should a female eat"])   # "query: " prefix
    p = model.encode_passages(["The CDC recommends 46 grams of protein a day for women."])
    scores = q @ p.T

``encode`` returns float32 numpy arrays written by the engine straight into the array's
memory; the GIL is released while the engine runs, and one ``Embedder`` may be shared by any
number of Python threads. ``e5embed.langchain.E5embedEmbeddings`` adapts it to LangChain.
"""

from ._e5embed import Embedder, __version__

__all__ = ["Embedder", "__version__"]
