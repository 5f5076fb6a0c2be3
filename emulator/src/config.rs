//! [`EmulatorConfig`]: timings, the accepted token and chaos, for `dev`, tests and
//! `hokusai-serve hf-emulator`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The token accepted by default (dev and tests; never a real HF token).
pub const DEFAULT_TOKEN: &str = "hf_emulator_token";

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The Bearer token the management and inference routes require.
    pub token: String,
    /// Time an endpoint stays `pending` after create.
    pub pending_time: Duration,
    /// Time it then stays `initializing` before `running` (also after resume and update).
    pub initializing_time: Duration,
    /// Time a scaled-to-zero endpoint takes to wake on its next request.
    pub cold_start_time: Duration,
    /// Initial chaos (also changeable at run time with `POST /_emulator/chaos`).
    pub chaos: ChaosConfig,
}

impl Default for EmulatorConfig {
    /// Fast provisioning for dev and tests: running within a quarter of a second.
    fn default() -> Self {
        Self {
            token: DEFAULT_TOKEN.to_owned(),
            pending_time: Duration::from_millis(50),
            initializing_time: Duration::from_millis(150),
            cold_start_time: Duration::from_millis(200),
            chaos: ChaosConfig::default(),
        }
    }
}

impl EmulatorConfig {
    /// Timings closer to the real service (seconds, not milliseconds) for manual runs.
    pub fn realistic() -> Self {
        Self {
            pending_time: Duration::from_secs(5),
            initializing_time: Duration::from_secs(20),
            cold_start_time: Duration::from_secs(10),
            ..Self::default()
        }
    }
}

/// Injected failures. Counters (`*_next`) are consumed one request (or endpoint) at a time;
/// periodic ones (`*_every`) hit every n-th management request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChaosConfig {
    /// The next n management requests answer 429 with `Retry-After`.
    pub rate_limit_next: u32,
    /// Every n-th management request answers 429 (0 = never).
    pub rate_limit_every: u32,
    /// Seconds sent in `Retry-After` with an injected 429.
    pub retry_after_secs: u64,
    /// The next n management requests answer 500.
    pub server_error_next: u32,
    /// Every n-th management request answers 500 (0 = never).
    pub server_error_every: u32,
    /// Added to every answer, management and inference (milliseconds).
    pub latency_ms: u64,
    /// The next n endpoints created end `failed` instead of `running`.
    pub fail_next_deploys: u32,
    /// The next n management requests answer 403, as HF does for a token without the
    /// permission (a permanent failure to the adapter, never retried).
    pub forbidden_next: u32,
    /// Pause between two events of a streamed (SSE) OpenAI answer, in milliseconds (0 = none),
    /// to see tokens arrive one by one.
    pub stream_chunk_delay_ms: u64,
    /// Cut every streamed OpenAI answer after this many chunks (0 = never): the body ends in
    /// an error, without `data: [DONE]`, as when a replica dies mid-generation. An answer
    /// with exactly this many chunks loses only its `[DONE]`; a shorter one is untouched.
    pub stream_abort_after: u32,
}
