// Deploys a model on hokusai-serve, waits until it serves, predicts and prints the prediction.
//
//   npm ci && npm run build
//   HOKUSAI_URL=http://127.0.0.1:8001 HOKUSAI_API_KEY=hk_dev_… npm start
//
// Optional: HOKUSAI_MODEL_ID (sentiment), HOKUSAI_REPOSITORY, HOKUSAI_TASK, HOKUSAI_TIMEOUT
// (seconds to wait for the deployment, 180). Exits non-zero on any failure; the key is never
// printed.

/** A deployment as the API returns it (the fields this example reads). */
interface Deployment {
  id: string;
  status: string;
  error_message: string | null;
}

/** `GET /api/v1/models/{model_id}/status`. */
interface ModelStatus {
  model_id: string;
  status: string;
  deployment_id: string;
}

/** `POST /api/v1/models/{model_id}/predict`. */
interface Prediction {
  model_id: string;
  predictions: unknown[];
  metadata: { deployment_id: string; model_version: string | null; response_time_ms: number };
  timestamp: string;
}

const TERMINAL_FAILURES = new Set(["failed", "rollback_failed", "stopped"]);

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (!value) {
    throw new Error(`set ${name}`);
  }
  return value;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class Client {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey: string,
  ) {}

  async send(method: string, path: string, body?: unknown): Promise<Response> {
    return fetch(this.baseUrl + path, {
      method,
      headers: {
        Authorization: `Bearer ${this.apiKey}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  }

  async call<T>(method: string, path: string, expected: number, body?: unknown): Promise<T> {
    const response = await this.send(method, path, body);
    if (response.status !== expected) {
      throw new Error(`${method} ${path} answered ${response.status}: ${await response.text()}`);
    }
    return (await response.json()) as T;
  }

  async deploy(modelId: string, repository: string, task: string): Promise<string> {
    const created = await this.call<{ deployment: Deployment }>(
      "POST",
      `/api/v1/models/${modelId}/deployments`,
      202,
      { repository, task },
    );
    return created.deployment.id;
  }

  async waitServing(modelId: string, deploymentId: string, timeoutSeconds: number): Promise<void> {
    const deadline = Date.now() + timeoutSeconds * 1000;
    for (;;) {
      const status = await this.call<ModelStatus>("GET", `/api/v1/models/${modelId}/status`, 200);
      if (status.deployment_id === deploymentId && status.status === "serving") {
        return;
      }
      const deployment = await this.call<Deployment>("GET", `/api/v1/deployments/${deploymentId}`, 200);
      if (TERMINAL_FAILURES.has(deployment.status)) {
        throw new Error(`deployment ${deploymentId} ended ${deployment.status}: ${deployment.error_message}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`deployment ${deploymentId} not serving after ${timeoutSeconds}s`);
      }
      await sleep(1000);
    }
  }

  async predict(modelId: string, inputs: unknown): Promise<Prediction> {
    const path = `/api/v1/models/${modelId}/predict`;
    let response = await this.send("POST", path, { inputs });
    // 503 MODEL_NOT_READY: a cold endpoint is waking up; Retry-After says when to come back.
    for (let attempt = 1; response.status === 503 && attempt < 10; attempt++) {
      await sleep(Number(response.headers.get("Retry-After") ?? "1") * 1000);
      response = await this.send("POST", path, { inputs });
    }
    if (response.status !== 200) {
      throw new Error(`POST ${path} answered ${response.status}: ${await response.text()}`);
    }
    return (await response.json()) as Prediction;
  }
}

async function main(): Promise<void> {
  const client = new Client(env("HOKUSAI_URL").replace(/\/+$/, ""), env("HOKUSAI_API_KEY"));
  const modelId = env("HOKUSAI_MODEL_ID", "sentiment");
  const repository = env("HOKUSAI_REPOSITORY", "distilbert/distilbert-base-uncased-finetuned-sst-2-english");
  const task = env("HOKUSAI_TASK", "text-classification");
  const timeout = Number(env("HOKUSAI_TIMEOUT", "180"));

  const deploymentId = await client.deploy(modelId, repository, task);
  console.log(`deployment ${deploymentId} accepted`);
  await client.waitServing(modelId, deploymentId, timeout);
  console.log(`deployment ${deploymentId} serving`);
  const answer = await client.predict(modelId, "I love this movie");
  console.log(`prediction: ${JSON.stringify(answer.predictions)}`);
}

main().catch((error: unknown) => {
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
