"""The official `openai` Python client against hokusai-serve's OpenAI-compatible routes.

Run by tests/tests/api_openai.rs with HOKUSAI_BASE_URL (…/v1), HOKUSAI_KEY (a Hokusai API key
with `predict`), HOKUSAI_CHAT_MODEL (a text-generation model) and HOKUSAI_EMBED_MODEL (a
feature-extraction model). Exits non-zero on any mismatch; prints "OK: openai ..." at the end.
"""

import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["HOKUSAI_BASE_URL"], api_key=os.environ["HOKUSAI_KEY"], max_retries=0)
chat_model = os.environ["HOKUSAI_CHAT_MODEL"]
embed_model = os.environ["HOKUSAI_EMBED_MODEL"]
messages = [{"role": "user", "content": "Say hello to the gateway"}]

# Chat, not streamed.
answer = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=5)
assert answer.model == chat_model, answer
content = answer.choices[0].message.content
assert len(content.split()) == 5, content
assert answer.usage.completion_tokens == 5 and answer.usage.prompt_tokens == 5, answer.usage

# Chat, streamed: the same words, chunk by chunk, usage in the last chunk.
stream = client.chat.completions.create(
    model=chat_model, messages=messages, max_tokens=5, stream=True,
    stream_options={"include_usage": True})
pieces, usage = [], None
for chunk in stream:
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
    if chunk.usage:
        usage = chunk.usage
assert "".join(pieces) == content, (pieces, content)
assert usage is not None and usage.completion_tokens == 5, usage

# Completions.
completion = client.completions.create(model=chat_model, prompt="Once upon a time", max_tokens=3)
assert len(completion.choices[0].text.split()) == 3, completion

# Embeddings: the client asks for base64 by default and decodes it.
embedding = client.embeddings.create(model=embed_model, input=["hello", "world"])
assert len(embedding.data) == 2, embedding
assert all(isinstance(x, float) for x in embedding.data[0].embedding), embedding
floats = client.embeddings.create(model=embed_model, input="hello", encoding_format="float")
pairs = zip(floats.data[0].embedding, embedding.data[0].embedding)
assert all(abs(a - b) < 1e-6 for a, b in pairs), "base64 and float agree"

# Models list.
ids = [m.id for m in client.models.list()]
assert chat_model in ids and embed_model in ids, ids

# Errors in OpenAI's shape become the client's exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    sys.exit("an unknown model was accepted")
except openai.NotFoundError as error:
    assert error.status_code == 404, error
try:
    OpenAI(base_url=os.environ["HOKUSAI_BASE_URL"], api_key="hk_wrong", max_retries=0).models.list()
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as error:
    assert error.status_code == 401, error
try:
    client.embeddings.create(model=chat_model, input="x")
    sys.exit("embeddings from a text-generation model were accepted")
except openai.BadRequestError as error:
    assert "text-generation" in str(error), error

print(f"OK: openai chat/stream/completions/embeddings/models/errors: {content!r}")
