"""The official `openai` Python client against /v1/embeddings, unchanged but for base_url.

Vectors are compared bit for bit with the `e5embed embed` CLI: both print shortest-round-trip
float32 decimals (or raw float32 bytes for base64), so equal bits mean the server returns
exactly the library's vectors.
"""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

TEXTS = [
    "how much protein should a female eat",
    "The CDC recommends 46 grams of protein a day for women.",
    "a",
    "Ünïcödé àccents, 中文字符, emoji 🚀 and a literal [SEP] token",
    "the lighthouse on the northern cape " * 40,  # over 128 tokens: cut
]


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def test_float_equals_cli(client, cli_embed):
    want = cli_embed(TEXTS)
    r = client.embeddings.create(input=TEXTS, model="e5embed", encoding_format="float")
    assert r.object == "list"
    assert [d.index for d in r.data] == list(range(len(TEXTS)))
    assert all(d.object == "embedding" for d in r.data)
    got = np.asarray([d.embedding for d in r.data], dtype=np.float32)
    assert got.shape == want.shape == (len(TEXTS), 384)
    np.testing.assert_array_equal(bits(got), bits(want))
    assert r.usage.prompt_tokens == r.usage.total_tokens > len(TEXTS) * 2


def test_explicit_base64_is_raw_le_float32(client, cli_embed):
    want = cli_embed(TEXTS)
    r = client.embeddings.create(input=TEXTS, model="e5embed", encoding_format="base64")
    for d, w in zip(r.data, want):
        assert isinstance(d.embedding, str)
        got = np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
        np.testing.assert_array_equal(bits(got), bits(w))


def test_default_format_decoded_by_client(client, cli_embed):
    # Without encoding_format the client asks for base64 and decodes it to floats itself.
    want = cli_embed(TEXTS[:2])
    r = client.embeddings.create(input=TEXTS[:2], model="e5embed")
    got = np.asarray([d.embedding for d in r.data], dtype=np.float32)
    np.testing.assert_array_equal(bits(got), bits(want))


def test_single_string_and_prompt(client, cli_embed):
    want = cli_embed([TEXTS[0]])
    r = client.embeddings.create(input=TEXTS[0], model="e5embed", encoding_format="float")
    np.testing.assert_array_equal(bits(r.data[0].embedding), bits(want[0]))
    # prompt_name (an extension, through extra_body) equals the CLI's --query.
    want = cli_embed([TEXTS[0]], "--query")
    r = client.embeddings.create(
        input=[TEXTS[0]], model="e5embed", encoding_format="float", extra_body={"prompt_name": "query"}
    )
    np.testing.assert_array_equal(bits(r.data[0].embedding), bits(want[0]))


def test_dimensions(client, cli_embed):
    want = cli_embed([TEXTS[1]])
    r = client.embeddings.create(input=TEXTS[1], model="e5embed", encoding_format="float", dimensions=64)
    # This model does not normalize: a plain cut.
    np.testing.assert_array_equal(bits(r.data[0].embedding), bits(want[0][:64]))


def test_errors_raise_the_clients_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=[], model="e5embed")
    assert "no inputs" in str(e.value)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.embeddings.create(input=["ok", ""], model="e5embed")
    assert "empty string" in str(e.value)
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(input=["x"] * 3000, model="e5embed")
    with pytest.raises(openai.APIStatusError) as e:
        client.embeddings.create(input="word " * 500_000, model="e5embed")
    assert e.value.status_code == 413
    # And it still serves.
    assert len(client.embeddings.create(input="fine", model="e5embed").data) == 1
