"""Type stubs of e5embed's native module (re-exported as ``e5embed.Embedder``)."""

import os
from typing import Dict, Iterable, List, Literal, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

class Embedder:
    """A loaded embedding model, safe to share across Python threads.

    Args:
        model: a model directory (Hugging Face layout: config.json, model.safetensors,
            tokenizer.json, and the sentence-transformers files when present) or a Hugging
            Face hub id (``"intfloat/e5-small-v2"``, ``"owner/name@revision"``), downloaded once
            into the cache (``HF_TOKEN``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` are honoured).
        precision: ``"auto"`` (int8 for a model saved by ``e5embed quantize``, else bf16
            where the per-CPU tuning measured it at least 1.2x faster than f32, else f32),
            ``"f32"``, ``"int8"`` or ``"bf16"``.
        threads: worker threads (default: the physical cores).
        max_batch_tokens: tokens per forward pass (texts are sorted by length and packed up to
            this budget; default 2048 at f32, 1024 at int8).
        isa: force a kernel path (e.g. ``"scalar"``, ``"avx2"``, ``"avx512"``); default: the best.
        normalize: L2-normalize by default (default: what the model's modules.json says).
        weight_cache: keep the packed weights in the cache directory and map them at later
            loads (default ``True``); ``False`` packs ``model.safetensors`` at every
            load and writes nothing (read-only cache directories). Same vectors either way.

    Raises:
        OSError: the directory, a model file or the hub download is missing or invalid.
        ValueError: an option is out of range (``threads=0``, an unknown precision, ...).
    """

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"],
        precision: str = "auto",
        threads: Optional[int] = None,
        max_batch_tokens: Optional[int] = None,
        *,
        isa: Optional[str] = None,
        normalize: Optional[bool] = None,
        weight_cache: Optional[bool] = None,
    ) -> None: ...
    @overload
    def encode(
        self,
        sentences: str,
        prompt: Optional[str] = None,
        prompt_name: Optional[str] = None,
        batch_size: Optional[int] = None,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: Literal[True] = True,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        sentences: Iterable[str],
        prompt: Optional[str] = None,
        prompt_name: Optional[str] = None,
        batch_size: Optional[int] = None,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: Literal[True] = True,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        sentences: Union[str, Iterable[str]],
        prompt: Optional[str] = None,
        prompt_name: Optional[str] = None,
        batch_size: Optional[int] = None,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = ...,
    ) -> Union[npt.NDArray[np.float32], List[float], List[npt.NDArray[np.float32]]]: ...
    def encode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Embeds text, as sentence-transformers' ``SentenceTransformer.encode``.

        Args:
            sentences: one str (gives a 1-D ``[dim]`` array) or a sequence of str (gives a
                ``[n, dim]`` float32 C-contiguous array, rows in input order).
            prompt: a prefix added to every text (``""``: none, not even the model's default).
            prompt_name: a prompt by name: the model's own prompts
                (config_sentence_transformers.json), then E5's ``"query"`` / ``"passage"``.
                Default: the model's ``default_prompt_name``, if any.
            batch_size: texts per engine call (the engine packs its forwards by tokens, so this
                only bounds the memory of one call's token lists and sets the progress steps);
                default: all at once. A text's vector does not depend on it.
            normalize_embeddings: L2-normalize (``True``) or not (``False``); default: the
                model's pipeline (its modules.json).
            show_progress_bar: a tqdm bar (a stderr line when tqdm is not installed).
            convert_to_numpy: ``False`` gives a list of 1-D arrays (one str: a list of floats).

        Raises:
            ValueError: an unknown prompt name, ``batch_size=0``, or a text the engine refuses.
            TypeError: ``sentences`` is neither a str nor an iterable of str.
        """
    def encode_queries(
        self,
        sentences: Union[str, Iterable[str]],
        batch_size: Optional[int] = None,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
    ) -> npt.NDArray[np.float32]:
        """``encode`` with the ``query`` prompt (E5's ``"query: "`` unless the model defines one)."""
    def encode_passages(
        self,
        sentences: Union[str, Iterable[str]],
        batch_size: Optional[int] = None,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
    ) -> npt.NDArray[np.float32]:
        """``encode`` with the ``passage`` prompt (E5's ``"passage: "`` unless the model defines one)."""
    def tokenize(self, sentences: Union[str, Sequence[str]]) -> Dict[str, list]:
        """Token ids as the model sees them: ``{"input_ids": [[CLS ... SEP], ...],
        "truncated": [bool, ...]}`` (no prompt added; cut at ``max_seq_length``).
        ``len(ids)`` counts a text's tokens."""
    def get_sentence_embedding_dimension(self) -> int:
        """The embedding width (sentence-transformers' name for ``dim``)."""
    @property
    def dim(self) -> int:
        """The embedding width (384 for e5-small-v2)."""
    @property
    def max_seq_length(self) -> int:
        """The longest text in tokens; longer texts are truncated."""
    @property
    def precision(self) -> str:
        """The GEMM precision in use: ``"f32"``, ``"int8"`` or ``"bf16"``."""
    @property
    def isa(self) -> str:
        """The f32 kernel path in use (e.g. ``"avx512"``)."""
    @property
    def threads(self) -> int:
        """Worker threads of this embedder."""
    @property
    def normalize_embeddings(self) -> bool:
        """Whether ``encode`` L2-normalizes by default."""
    @property
    def model_dir(self) -> str:
        """The model directory (a hub id resolves to its cached snapshot)."""
    @property
    def prompts(self) -> Dict[str, str]:
        """Prompts by name: the model's own, then E5's ``query`` and ``passage``."""
    @property
    def default_prompt_name(self) -> Optional[str]:
        """The prompt applied when ``encode`` gets neither ``prompt`` nor ``prompt_name``."""
    def _last_engine_seconds(self) -> float:
        """Seconds the last call spent in the engine (GIL released); for tools/pybench."""
