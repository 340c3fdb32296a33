//! The `rsvault` binary: the server, the engine worker, and operator commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rsvault",
    version,
    about = "A self-hosted backup service that speaks the Azure Backup REST API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (HTTPS, SQLite metadata, local repositories).
    Serve {
        /// Data directory (metadata, repositories, TLS material, admin token).
        #[arg(long, default_value = "./rsvault-data", env = "RSVAULT_DATA")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443", env = "RSVAULT_LISTEN")]
        listen: SocketAddr,
        /// Configuration file (TOML). Default: DATA/rsvault.toml when present.
        #[arg(long, env = "RSVAULT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Internal: run one engine request read from stdin (started by the server).
    #[command(hide = true)]
    EngineWorker,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::EngineWorker => rsvault_engine::worker::serve_stdio(),
        Command::Serve {
            data,
            listen,
            config,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "rsvault=info,warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let exe = std::env::current_exe()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(rsvault::server::serve(rsvault::server::ServeOptions {
                data,
                listen,
                config,
                worker: (exe, vec!["engine-worker".into()]),
            }))
        }
    }
}
