//! The `switchboard` command: thin wrappers over the library (cli.md).

mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "Secure, low-overhead messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Add, replace or delete a user in a password file.
    Passwd {
        /// The password file (created if missing, mode 0600).
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password (otherwise one line is read from standard input).
        #[arg(long)]
        password: Option<String>,
        /// Remove the user instead.
        #[arg(long)]
        delete: bool,
    },
    /// Write a development CA, a server certificate for localhost and
    /// 127.0.0.1, and client certificates.
    Certs {
        /// Target directory.
        dir: PathBuf,
        /// A client certificate with subject CN=NAME (NAME.pem, NAME.key); repeatable.
        #[arg(long, value_name = "NAME")]
        client: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Interactive chat client (not available yet).
    Chat(ClientArgs),
    /// Publish messages (not available yet).
    Pub(ClientArgs),
    /// Print received messages (not available yet).
    Sub(ClientArgs),
    /// Load generator (not available yet).
    Bench {
        /// Anything.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// Accepts the client commands' arguments until the clients land.
#[derive(clap::Args, Debug)]
struct ClientArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Passwd {
            file,
            user,
            password,
            delete,
        } => {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            match switchboard::passwd::run_command(
                &file,
                &user,
                password.as_deref(),
                delete,
                &mut lock,
            ) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard passwd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Certs { dir, client, force } => {
            match switchboard::certs::generate(&dir, &client, force) {
                Ok(written) => {
                    for path in written {
                        println!("wrote {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard certs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Chat(_) => not_yet("chat"),
        Command::Pub(_) => not_yet("pub"),
        Command::Sub(_) => not_yet("sub"),
        Command::Bench { .. } => not_yet("bench"),
    }
}

fn not_yet(what: &str) -> ExitCode {
    eprintln!("switchboard {what}: not available yet in this version");
    ExitCode::from(2)
}
