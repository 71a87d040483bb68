//! The `channelgate` command: parses arguments, loads the configuration, starts logging and
//! hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use channelgate::config::Config;
use channelgate::server::{self, RunOptions};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// `--config FILE`, shared by the subcommands that read the configuration.
#[derive(clap::Args)]
struct ConfigFile {
    /// The TOML configuration file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "/etc/channelgate/channelgate.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration until SIGTERM or SIGINT (which drain in-flight
    /// requests for up to [server] grace_period, then exit 0). SIGQUIT hands the listening
    /// sockets to a new instance started with --upgrade.
    Run {
        #[command(flatten)]
        file: ConfigFile,
        /// Take the listening sockets over from the running instance (zero-downtime
        /// upgrade): start the new binary with --upgrade, then send SIGQUIT to the old one.
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Publish a message to a group through a running instance's admin listener
    /// (POST /publish/{group}); every WebSocket client in the group receives it.
    Publish {
        /// The admin listener's URL.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9100")]
        admin: String,
        /// The group, e.g. updates-5.
        #[arg(long)]
        group: String,
        /// Send this text; clients receive it as one text frame.
        #[arg(long, conflicts_with = "json", required_unless_present = "json")]
        text: Option<String>,
        /// Send this JSON event, e.g. '{"type": "x.y", "text": "hi"}'.
        #[arg(long)]
        json: Option<String>,
        /// Bearer token when the admin listener has [admin] publish_token; also read from
        /// CHANNELGATE_PUBLISH_TOKEN.
        #[arg(long, env = "CHANNELGATE_PUBLISH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Re-read the TLS certificate files in the running instance (like `nginx -s reload` for
    /// certificates): sends SIGHUP to the process in [server] pid_file. New handshakes use
    /// the new certificates; open connections continue. A bad file keeps the old certificate.
    Reload {
        /// The configuration, for its pid_file.
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Validate a configuration like `nginx -t`: print what was understood and exit 0, or
    /// print every error with its key, line and column and exit 1. TLS certificate files
    /// are read: each must match its key and be unexpired (a warning under 14 days).
    Check {
        #[command(flatten)]
        file: ConfigFile,
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
        Command::Check { file } => match load(&file.config) {
            Ok(c) => {
                print!("{}", c.summary());
                let Some(tls) = &c.tls else {
                    return ExitCode::SUCCESS;
                };
                let (lines, ok) = channelgate::tls::check_certificates(tls);
                print!("{lines}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("channelgate check: a certificate cannot be served");
                    ExitCode::from(1)
                }
            }
            Err(code) => code,
        },
        Command::Reload { file } => {
            let c = match load(&file.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match channelgate::tls::reload::signal_running(&c.server.pid_file) {
                Ok(pid) => {
                    println!(
                        "sent SIGHUP to channelgate (pid {pid}); its log says what was reloaded"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("channelgate reload: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Publish {
            admin,
            group,
            text,
            json,
            token,
        } => {
            let (body, content_type) = match (text, json) {
                (Some(t), _) => (t.into_bytes(), "text/plain; charset=utf-8"),
                (None, Some(j)) => (j.into_bytes(), "application/json"),
                (None, None) => unreachable!("clap requires --text or --json"),
            };
            match channelgate::publish::post(&admin, &group, &body, content_type, token.as_deref())
            {
                Ok((status, answer)) => {
                    println!("{answer}");
                    if (200..300).contains(&status) {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("channelgate publish: the server answered {status}");
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("channelgate publish: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run { file, upgrade } => {
            let config = match load(&file.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            channelgate::logging::init(&config.log);
            match server::build(&config, &RunOptions { upgrade }) {
                Ok(s) => {
                    tracing::info!(config = %config.source.display(), "channelgate starting");
                    server::write_pid_file(&config.server.pid_file);
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
