"""The official tritonclient[http] against hokusai-serve's Open Inference Protocol routes.

Run by tests/tests/api_oip.rs with HOKUSAI_URL (host:port), HOKUSAI_KEY (a Hokusai API key
with `predict`) and HOKUSAI_MODEL (a model serving text-classification). Exits non-zero on
any mismatch; prints "OK: tritonclient ..." at the end.
"""

import os
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url = os.environ["HOKUSAI_URL"]
model = os.environ["HOKUSAI_MODEL"]
auth = {"Authorization": f"Bearer {os.environ['HOKUSAI_KEY']}"}

client = httpclient.InferenceServerClient(url=url)

assert client.is_server_live(), "server live"
assert client.is_server_ready(), "server ready"
server = client.get_server_metadata(headers=auth)
assert server["name"] == "hokusai-serve" and "binary_tensor_data" in server["extensions"], server
assert client.is_model_ready(model, headers=auth), "model ready"
assert not client.is_model_ready("no-such-model", headers=auth), "unknown model not ready"

metadata = client.get_model_metadata(model, headers=auth)
assert metadata["name"] == model, metadata
assert metadata["inputs"][0]["datatype"] == "BYTES", metadata

# The client's default: BYTES input in the binary tensor data extension, no Content-Type,
# outputs requested in binary.
text = httpclient.InferInput("text", [2], "BYTES")
text.set_data_from_numpy(np.array([b"I love this", b"I hate this"], dtype=np.object_))
wanted = [httpclient.InferRequestedOutput("label"), httpclient.InferRequestedOutput("score")]
result = client.infer(model, [text], outputs=wanted, headers=auth)
labels = [label.decode() for label in result.as_numpy("label")]
scores = result.as_numpy("score")
assert labels == ["POSITIVE", "NEGATIVE"], labels
assert scores.dtype == np.float32 and scores.shape == (2,), scores
assert all(0.5 <= s < 1.0 for s in scores), scores

# No outputs named: all of them, binary (the client sets binary_data_output).
result = client.infer(model, [text], headers=auth)
assert result.as_numpy("label") is not None and result.as_numpy("score") is not None

# A refused key surfaces as the client's exception with our message and status.
try:
    client.infer(model, [text], headers={"Authorization": "Bearer hk_wrong"})
    sys.exit("an invalid key was accepted")
except InferenceServerException as error:
    assert "401" in str(error.status()) or "API key" in str(error), error

print(f"OK: tritonclient live/ready/server/metadata/infer against {model}: {labels} {list(scores)}")
