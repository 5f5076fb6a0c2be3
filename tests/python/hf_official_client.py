"""Drives the HF emulator with the official `huggingface_hub` client.

The emulator is checked against a client nobody on this project wrote: create, wait,
predict, pause, resume (twice: "already running" is fine), scale to zero and wake,
update, list, hardware listing and delete, exactly as a user of `huggingface_hub` would.

Run by `tests/tests/hf_official_client.rs`, which starts the emulator and passes
HOKUSAI_EMULATOR_V2_URL, HOKUSAI_EMULATOR_TOKEN and HOKUSAI_EMULATOR_NAMESPACE.
Exits non-zero (with the failing assertion) on any mismatch.
"""

import os
import sys

from huggingface_hub import constants

# The client has no env override for the management base: set it before any call.
constants.INFERENCE_ENDPOINTS_ENDPOINT = os.environ["HOKUSAI_EMULATOR_V2_URL"]

from huggingface_hub import HfApi, InferenceClient  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402

TOKEN = os.environ["HOKUSAI_EMULATOR_TOKEN"]
NAMESPACE = os.environ["HOKUSAI_EMULATOR_NAMESPACE"]
NAME = "hk-official-client-0001"
REPOSITORY = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"


def step(message):
    print(f"-- {message}", flush=True)


def label_of(result):
    """The container answers `[{…}]` for one input (the client then returns one element);
    the serverless form `[[{…}]]` gives a list. Accept both."""
    first = result[0] if isinstance(result, list) else result
    return first["label"]


def main():
    api = HfApi(token=TOKEN)

    step("hardware listing")
    hardware = api.list_inference_endpoints_hardware(namespace=NAMESPACE, token=TOKEN)
    cpu = [h for h in hardware if h.accelerator == "cpu" and h.status == "available"]
    assert any(h.id == "aws-us-east-1-intel-spr-x2" and h.price_per_hour == 0.067 for h in cpu), cpu

    step("create")
    endpoint = api.create_inference_endpoint(
        NAME,
        repository=REPOSITORY,
        framework="pytorch",
        task="text-classification",
        accelerator="cpu",
        vendor="aws",
        region="us-east-1",
        instance_type="intel-spr",
        instance_size="x2",
        min_replica=1,
        max_replica=1,
        namespace=NAMESPACE,
        token=TOKEN,
    )
    assert endpoint.name == NAME and endpoint.repository == REPOSITORY, endpoint
    assert endpoint.status in ("pending", "initializing"), endpoint.status
    assert endpoint.url is None, endpoint.url

    step("wait (running + url + health route 200)")
    endpoint.wait(timeout=30, refresh_every=1)
    assert endpoint.status == "running" and endpoint.url, endpoint

    step("predict through endpoint.client")
    assert label_of(endpoint.client.text_classification("I love you")) == "POSITIVE"

    step("pause")
    endpoint.pause()
    assert endpoint.status == "paused" and endpoint.url is None, endpoint

    step("resume, wait, resume again (already running is fine)")
    endpoint.resume()
    endpoint.wait(timeout=30, refresh_every=1)
    endpoint.resume(running_ok=True)
    assert endpoint.status == "running", endpoint.status

    step("scale to zero: 503 while waking, X-Scale-Up-Timeout waits")
    endpoint.scale_to_zero()
    assert endpoint.status == "scaledToZero" and endpoint.url, endpoint
    try:
        endpoint.client.text_classification("I love you")
        raise AssertionError("a scaled-to-zero endpoint must answer 503 without X-Scale-Up-Timeout")
    except HfHubHTTPError as error:
        assert error.response.status_code == 503, error
    waiting = InferenceClient(model=endpoint.url, token=TOKEN, headers={"X-Scale-Up-Timeout": "30"})
    assert label_of(waiting.text_classification("I love you")) == "POSITIVE"

    step("update")
    endpoint.update(instance_size="x4")
    endpoint.wait(timeout=30, refresh_every=1)
    assert endpoint.raw["compute"]["instanceSize"] == "x4", endpoint.raw

    step("list")
    names = [e.name for e in api.list_inference_endpoints(namespace=NAMESPACE, token=TOKEN)]
    assert names == [NAME], names

    step("delete")
    endpoint.delete()
    try:
        api.get_inference_endpoint(NAME, namespace=NAMESPACE, token=TOKEN)
        raise AssertionError("a deleted endpoint must be 404")
    except HfHubHTTPError as error:
        assert error.response.status_code == 404, error

    print("OK: the official client drove the emulator through the whole lifecycle")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # report, then fail the Rust test through the exit code
        print(f"FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        raise
