//! `hokusai-serve hf-emulator`: the HuggingFace Inference Endpoints emulator on its own
//! (docs/design/providers.md), for the compose stack and manual runs. It says loudly that it is not
//! the real service; every response carries `X-Hokusai-Emulator: 1`.

use anyhow::Context;
use emulator::EmulatorConfig;

use super::{Failure, shutdown_signal};

/// Serves the emulator until Ctrl-C or SIGTERM.
pub async fn run(host: &str, port: u16, realistic: bool) -> Result<(), Failure> {
    let config = if realistic {
        EmulatorConfig::realistic()
    } else {
        EmulatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("binding the HF emulator on {host}:{port}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    super::print(&format!(
        "HuggingFace Inference Endpoints EMULATOR (not the real service) on http://{address}\n\
         \x20 management API  http://{address}/v2   (HUGGINGFACE_API_BASE=http://{address})\n\
         \x20 token           {}   (HUGGINGFACE_API_KEY for hokusai-serve)\n\
         \x20 chaos control   POST http://{address}/_emulator/chaos\n",
        config.token
    ));
    emulator::serve(listener, config, shutdown_signal())
        .await
        .context("serving the HF emulator")?;
    Ok(())
}
