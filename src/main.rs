//! The `channelgate` command: parses arguments, loads the configuration, starts logging and
//! hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use channelgate::config::Config;
use channelgate::server::{self, RunOptions};

/// channelgate: a reverse proxy for Django/WSGI apps that serves WebSockets in-process.
///
/// Ordinary HTTP is proxied to the upstream WSGI servers (gunicorn, uwsgi). Metrics,
/// health and readiness are served on the admin listener.
#[derive(Parser)]
#[command(name = "channelgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration until SIGTERM or SIGINT (which drain in-flight
    /// requests for up to [server] grace_period, then exit 0). SIGQUIT hands the listening
    /// sockets to a new instance started with --upgrade.
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/channelgate/channelgate.toml")]
        config: PathBuf,
        /// Take the listening sockets over from the running instance (zero-downtime
        /// upgrade): start the new binary with --upgrade, then send SIGQUIT to the old one.
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a configuration like `nginx -t`: print what was understood and exit 0, or
    /// print every error with its key, line and column and exit 1.
    Check {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/channelgate/channelgate.toml")]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                print!("{}", c.summary());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config, upgrade } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            channelgate::logging::init(&config.log);
            match server::build(&config, &RunOptions { upgrade }) {
                Ok(s) => {
                    tracing::info!(config = %config.source.display(), "channelgate starting");
                    server::run(s);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("cannot start: {e}");
                    eprintln!("channelgate: cannot start: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
