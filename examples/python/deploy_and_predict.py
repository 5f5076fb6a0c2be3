"""Deploys a model on hokusai-serve, waits until it serves, predicts and prints the prediction.

    HOKUSAI_URL=http://127.0.0.1:8001 HOKUSAI_API_KEY=hk_dev_... python deploy_and_predict.py

Optional: HOKUSAI_MODEL_ID (sentiment), HOKUSAI_REPOSITORY, HOKUSAI_TASK, HOKUSAI_TIMEOUT
(seconds to wait for the deployment, 180). Needs `requests`. Exits non-zero on any failure;
the key is never printed.
"""

import json
import os
import sys
import time

import requests

TERMINAL_FAILURES = {"failed", "rollback_failed", "stopped"}


class HokusaiError(Exception):
    """An answer other than the expected one."""


def env(name, default=None):
    value = os.environ.get(name, default)
    if not value:
        raise SystemExit(f"error: set {name}")
    return value


class Client:
    def __init__(self, base_url, api_key):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method, path, expected, body=None):
        response = self.session.request(method, self.base_url + path, json=body, timeout=30)
        if response.status_code != expected:
            raise HokusaiError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json()

    def deploy(self, model_id, repository, task):
        created = self.call(
            "POST",
            f"/api/v1/models/{model_id}/deployments",
            202,
            {"repository": repository, "task": task},
        )
        return created["deployment"]["id"]

    def wait_serving(self, model_id, deployment_id, timeout):
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("GET", f"/api/v1/models/{model_id}/status", 200)
            if status["deployment_id"] == deployment_id and status["status"] == "serving":
                return status
            deployment = self.call("GET", f"/api/v1/deployments/{deployment_id}", 200)
            if deployment["status"] in TERMINAL_FAILURES:
                raise HokusaiError(
                    f"deployment {deployment_id} ended {deployment['status']}: "
                    f"{deployment['error_message']}"
                )
            if time.monotonic() > deadline:
                raise HokusaiError(f"deployment {deployment_id} not serving after {timeout}s")
            time.sleep(1)

    def predict(self, model_id, inputs, attempts=10):
        path = f"/api/v1/models/{model_id}/predict"
        for _ in range(attempts):
            response = self.session.post(self.base_url + path, json={"inputs": inputs}, timeout=30)
            if response.status_code != 503:  # MODEL_NOT_READY: a cold endpoint is waking up
                break
            time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code != 200:
            raise HokusaiError(f"POST {path} answered {response.status_code}: {response.text}")
        return response.json()


def main():
    client = Client(env("HOKUSAI_URL"), env("HOKUSAI_API_KEY"))
    model_id = env("HOKUSAI_MODEL_ID", "sentiment")
    repository = env(
        "HOKUSAI_REPOSITORY", "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    )
    task = env("HOKUSAI_TASK", "text-classification")
    timeout = float(env("HOKUSAI_TIMEOUT", "180"))
    try:
        deployment_id = client.deploy(model_id, repository, task)
        print(f"deployment {deployment_id} accepted")
        client.wait_serving(model_id, deployment_id, timeout)
        print(f"deployment {deployment_id} serving")
        answer = client.predict(model_id, "I love this movie")
    except (HokusaiError, requests.RequestException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"prediction: {json.dumps(answer['predictions'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
