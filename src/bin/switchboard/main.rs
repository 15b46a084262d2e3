//! The `switchboard` command: thin wrappers over the library (cli.md).

mod bench;
mod clients;
mod serve;
mod stats;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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
    ///
    /// On a terminal the password is asked for twice, without echo;
    /// otherwise one line is read from standard input.
    Passwd {
        /// The password file (created if missing, mode 0600).
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password. It shows in the process list and the shell's
        /// history: prefer the prompt, or a line on standard input.
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
        /// Encrypt every private key written with the password on this
        /// file's first line (PKCS#8 ENCRYPTED PRIVATE KEY, AES-256-CBC);
        /// also decrypts an existing encrypted ca.key.
        #[arg(long, value_name = "FILE")]
        key_password_file: Option<PathBuf>,
    },
    /// Interactive line client: join groups, talk, send one-to-one messages;
    /// with --p2p also a peer, sending and taking direct messages.
    Chat(clients::ChatArgs),
    /// Publish a message (or each line of standard input) and exit.
    Pub(clients::PubArgs),
    /// Print each message received in groups, one a line.
    Sub(clients::SubArgs),
    /// Send a request to a group and print the reply.
    Request(clients::RequestArgs),
    /// Answer each request to a group by running a command.
    Reply(clients::ReplyArgs),
    /// Print the server's STATS figures (once, or every --watch SECS with rates).
    Stats(stats::StatsArgs),
    /// Load generator against a running server on loopback: density,
    /// fanout, echo, handshake.
    Bench(bench::BenchArgs),
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
            let prompted = if password.is_none()
                && !delete
                && stdin.is_terminal()
                && switchboard::proto::command::is_valid_user(user.as_bytes())
            {
                match prompt_new_password(&file, &user) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        eprintln!("switchboard passwd: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                None
            };
            let mut lock = stdin.lock();
            match switchboard::passwd::run_command(
                &file,
                &user,
                password.as_deref().or(prompted.as_deref()),
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
        Command::Certs {
            dir,
            client,
            force,
            key_password_file,
        } => {
            let password = match key_password_file
                .as_deref()
                .map(switchboard::certs::read_password_file)
                .transpose()
            {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("switchboard certs: --key-password-file: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match switchboard::certs::generate_with_password(
                &dir,
                &client,
                force,
                password.as_deref(),
            ) {
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
        Command::Chat(args) => clients::run_chat(args),
        Command::Pub(args) => clients::run_pub(args),
        Command::Sub(args) => clients::run_sub(args),
        Command::Request(args) => clients::run_request(args),
        Command::Reply(args) => clients::run_reply(args),
        Command::Stats(args) => stats::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Asks for a new password twice on the terminal, without echo; refuses
/// when the two differ (nothing is written then).
fn prompt_new_password(file: &Path, user: &str) -> Result<String, String> {
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map_err(|e| format!("cannot read a password from the terminal: {e}"))
    };
    let first = ask(format!("New password for {user}: "))?;
    if first.is_empty() {
        return Err(format!(
            "the password is empty; {} not changed",
            file.display()
        ));
    }
    let second = ask(format!("Retype the password for {user}: "))?;
    if first != second {
        return Err(format!(
            "the passwords do not match; {} not changed",
            file.display()
        ));
    }
    Ok(first)
}
