"""Deploys a text-generation model on hokusai-serve, then chats with it through the official
`openai` SDK (the OpenAI-compatible routes), streaming the answer as it is generated.

    HOKUSAI_URL=http://127.0.0.1:8001 HOKUSAI_API_KEY=hk_dev_... python openai_chat.py

Optional: HOKUSAI_MODEL_ID (chat), HOKUSAI_REPOSITORY (openai-community/gpt2),
HOKUSAI_TIMEOUT (seconds to wait for the deployment, 180). Needs `requests` and `openai`.
Exits non-zero on any failure; the key is never printed.
"""

import os
import sys

import openai
import requests

from deploy_and_predict import Client, HokusaiError, env


def main():
    base_url = env("HOKUSAI_URL").rstrip("/")
    api_key = env("HOKUSAI_API_KEY")
    model_id = env("HOKUSAI_MODEL_ID", "chat")
    repository = env("HOKUSAI_REPOSITORY", "openai-community/gpt2")
    timeout = float(env("HOKUSAI_TIMEOUT", "180"))
    hokusai = Client(base_url, api_key)
    try:
        deployment_id = hokusai.deploy(model_id, repository, "text-generation")
        hokusai.wait_serving(model_id, deployment_id, timeout)
        print(f"deployment {deployment_id} serving")
        # The Hokusai key is the OpenAI key; `model` is the Hokusai model id.
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=5)
        stream = client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": "Write a haiku about endpoints"}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        words, usage = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                words.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
    except (HokusaiError, requests.RequestException, openai.OpenAIError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"answer: {''.join(words).strip()}")
    print(f"tokens: {usage.prompt_tokens} prompt, {usage.completion_tokens} completion")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
