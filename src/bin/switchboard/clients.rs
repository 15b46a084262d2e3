//! `switchboard chat`, `pub` and `sub`: thin command-line clients over
//! [`switchboard::Client`] (cli.md, "Clients").
//!
//! Every command connects with the common flags ([`ConnectArgs`]), does its
//! job, and says what went wrong in one line on standard error with a
//! non-zero status when it cannot connect, verify the server, or log in.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use switchboard::client::{Backoff, ClientTls, DirectoryEntry, Endpoint};
use switchboard::error::ErrorCode;
use switchboard::peer::{self, PeerConfig, PeerEndpoint, PeerError};
use switchboard::{Client, ClientConfig, ClientError, Push};

/// The plain TCP address the server listens on by default.
const DEFAULT_ADDR: &str = "127.0.0.1:7420";
/// The TLS address the server listens on by default.
const DEFAULT_TLS_ADDR: &str = "127.0.0.1:7421";
/// The CA file `switchboard serve` writes on first start (in its directory).
const DEFAULT_CA: &str = "certs/ca.pem";

// ---------------------------------------------------------------------------
// Common flags
// ---------------------------------------------------------------------------

/// The flags every client command takes.
#[derive(clap::Args, Debug)]
pub(crate) struct ConnectArgs {
    /// The user name to log in as (with `--auth cert`, the client
    /// certificate's CN).
    #[arg(long, short = 'u', value_name = "NAME")]
    user: String,
    /// Server address, instead of the positional ADDR: `host:port`, or a
    /// URL `tcp://HOST[:PORT]`, `tls://HOST[:PORT]`, `ws://HOST[:PORT][/PATH]`,
    /// `wss://HOST[:PORT][/PATH]` (WebSocket, over TLS for wss)
    /// [default: 127.0.0.1:7420, or 127.0.0.1:7421 with TLS].
    #[arg(long, value_name = "ADDR")]
    addr: Option<String>,
    /// Connect with TLS and verify the server certificate against `--ca`
    /// before sending the user name or password. Implied by `--ca`,
    /// `--cert` and `--server-name`, and by a `tls://` or `wss://` ADDR.
    #[arg(long)]
    tls: bool,
    /// CA bundle (PEM) the server certificate must chain to
    /// [default with TLS: certs/ca.pem, as written by `switchboard serve`].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `--key`.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of `--cert`.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Name to verify the server certificate for [default: the host of ADDR].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Read the password from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "password_prompt")]
    password_file: Option<PathBuf>,
    /// Ask for the password on the terminal (without echo) before connecting.
    /// Without this flag or `--password-file` the password is asked for only
    /// when the server says it requires one, and only if there is a terminal.
    #[arg(long)]
    password_prompt: bool,
    /// Reconnect (with backoff, logging in and re-subscribing again) when the
    /// connection drops, instead of ending.
    #[arg(long)]
    reconnect: bool,
    /// Seconds to wait for the connection, the TLS handshake, the WebSocket
    /// upgrade and the login.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    connect_timeout: f64,
}

impl ConnectArgs {
    /// Whether a flag asks for TLS.
    fn uses_tls(&self) -> bool {
        self.tls || self.ca.is_some() || self.cert.is_some() || self.server_name.is_some()
    }

    /// Whether `addr` is reached over TLS: its scheme says so (`tls://`,
    /// `wss://`; `tcp://` and `ws://` with a TLS flag are a mistake, not a
    /// guess), and a bare `host:port` follows the flags.
    fn tls_for(&self, addr: &str) -> Result<bool, String> {
        let endpoint = Endpoint::parse(addr).map_err(|e| match e {
            ClientError::Config(why) => why,
            other => other.to_string(),
        })?;
        match endpoint.scheme {
            None => Ok(self.uses_tls()),
            Some(s) if s.is_tls() => Ok(true),
            Some(s) if self.uses_tls() => Err(format!(
                "{addr} is not TLS, but --tls, --ca, --cert or --server-name asks for TLS: \
                 use {}:// (or drop the TLS flags)",
                if s.is_websocket() { "wss" } else { "tls" }
            )),
            Some(_) => Ok(false),
        }
    }

    /// The address: `--addr`, else the positional one, else the default.
    fn resolve_addr(&self, positional: Option<&str>) -> Result<String, String> {
        match (&self.addr, positional) {
            (Some(_), Some(p)) => Err(format!(
                "the address is given twice (--addr and {p:?}); give it once"
            )),
            (Some(a), None) => Ok(a.clone()),
            (None, Some(p)) => Ok(p.to_string()),
            (None, None) if self.uses_tls() => Ok(DEFAULT_TLS_ADDR.to_string()),
            (None, None) => Ok(DEFAULT_ADDR.to_string()),
        }
    }

    fn tls_config(&self, tls: bool) -> Result<Option<ClientTls>, String> {
        if !tls {
            return Ok(None);
        }
        let ca = self.ca.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CA));
        let mut tls = ClientTls::from_ca_file(&ca)
            .map_err(|e| format!("cannot use CA file {}: {}", ca.display(), file_error(&e)))?;
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.with_client_cert(cert, key).map_err(|e| {
                format!(
                    "cannot use client certificate {} / key {}: {}",
                    cert.display(),
                    key.display(),
                    file_error(&e)
                )
            })?;
        }
        if let Some(name) = &self.server_name {
            tls.server_name = Some(name.clone());
        }
        Ok(Some(tls))
    }

    /// Connects and logs in, asking for a password on the terminal if the
    /// server wants one and none was given.
    pub(crate) fn connect(&self, positional_addr: Option<&str>) -> Result<Client, String> {
        let addr = self.resolve_addr(positional_addr)?;
        let tls = self.tls_for(&addr)?;
        if !switchboard::proto::command::is_valid_user(self.user.as_bytes()) {
            return Err(format!(
                "invalid user name {:?}: 1 to 64 of A-Z a-z 0-9 . _ -",
                self.user
            ));
        }
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            return Err(format!(
                "--connect-timeout must be a positive number of seconds, not {}",
                self.connect_timeout
            ));
        }
        // Checked once up front so a bad file is reported before a password
        // is asked for; built again for each attempt (a key is not `Clone`).
        self.tls_config(tls)?;
        let mut password = if let Some(file) = &self.password_file {
            Some(read_password_file(file)?)
        } else if self.password_prompt {
            Some(prompt_password(&self.user)?)
        } else {
            None
        };
        let config = |password: Option<String>| -> Result<ClientConfig, String> {
            let mut c = ClientConfig::new(addr.clone(), self.user.clone());
            c.password = password;
            c.tls = self.tls_config(tls)?;
            c.connect_timeout = Duration::from_secs_f64(self.connect_timeout);
            if self.reconnect {
                c.reconnect = Some(Backoff::default());
            }
            Ok(c)
        };
        let mut asked = false;
        loop {
            match Client::connect(config(password.clone())?) {
                Ok(client) => return Ok(client),
                Err(e) if password.is_none() && !asked && wants_password(&e) => {
                    if !io::stdin().is_terminal() && !has_tty() {
                        return Err(format!(
                            "{addr}: the server requires a password: give --password-file FILE \
                             (or --password-prompt on a terminal)"
                        ));
                    }
                    password = Some(prompt_password(&self.user)?);
                    asked = true;
                }
                Err(e) => return Err(describe_connect_error(&addr, tls, &e)),
            }
        }
    }
}

/// Whether a failed login means "a password is needed".
fn wants_password(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Refused {
            code: ErrorCode::AuthRequired,
            ..
        }
    )
}

/// One line for a connection that could not be made, with a hint where the
/// cause is a likely mix-up (wrong CA, TLS against a plain port or back).
fn describe_connect_error(addr: &str, tls: bool, e: &ClientError) -> String {
    match e {
        ClientError::Io(io) => format!("cannot connect to {addr}: {io}"),
        ClientError::Tls(t) if t.contains("CertificateRequired") => format!(
            "{addr}: TLS failed: {t} (the server wants a client certificate: --cert and --key)"
        ),
        ClientError::Tls(t) if t.contains("certificate") => format!(
            "{addr}: TLS failed: {t} (is --ca the CA that signed the server's certificate?)"
        ),
        ClientError::Tls(t) if t.contains("corrupt message") => {
            format!("{addr}: TLS failed: {t} (is {addr} a TLS listener?)")
        }
        ClientError::Tls(t) => format!("{addr}: TLS failed: {t}"),
        ClientError::CertificateRejected => {
            format!("{addr}: the server certificate was rejected")
        }
        ClientError::Refused { code, text } => {
            format!("{addr}: login refused: {}: {text}", code.as_str())
        }
        ClientError::Timeout => format!("{addr}: no answer in time (connect, TLS or login)"),
        // A WebSocket error says what it can itself.
        ClientError::Protocol(p) if p.contains("WebSocket") => format!("{addr}: {p}"),
        ClientError::Protocol(p) if !tls => {
            format!("{addr}: {p} (a TLS listener? then add --tls)")
        }
        ClientError::Config(c) => c.clone(),
        other => format!("{addr}: {other}"),
    }
}

/// The text of an error without the variant's prefix where it is a file
/// problem (`ClientTls` loading reports those as `Tls`).
fn file_error(e: &ClientError) -> String {
    match e {
        ClientError::Tls(t) => t.clone(),
        ClientError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Whether a controlling terminal can be opened for the password prompt.
fn has_tty() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

fn read_password_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(format!(
            "password file {}: the first line is empty",
            path.display()
        ));
    }
    Ok(line.to_string())
}

/// Reads a password on the terminal without echo (not from standard input,
/// which carries the messages for `pub` and `chat`).
fn prompt_password(user: &str) -> Result<String, String> {
    let password = rpassword::prompt_password(format!("Password for {user}: "))
        .map_err(|e| format!("cannot read a password from the terminal: {e}"))?;
    if password.is_empty() {
        return Err("the password is empty".to_string());
    }
    Ok(password)
}

pub(crate) fn fail(cmd: &str, msg: &str) -> ExitCode {
    eprintln!("switchboard {cmd}: {msg}");
    ExitCode::FAILURE
}

/// Joins group numbers as `1,2`.
fn group_list(groups: &[u32]) -> String {
    groups
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// What a client adds to `unknown-group`: where groups come from.
const UNKNOWN_GROUP_HINT: &str = "a server has the groups given to \
`serve --group ID=NAME`, or any number with `serve --open-groups`";

/// One line for a failed request: `code: text` for a refusal (with a hint
/// for `unknown-group`).
pub(crate) fn describe_error(e: &ClientError) -> String {
    match e {
        ClientError::Refused {
            code: ErrorCode::UnknownGroup,
            text,
        } => format!("unknown-group: {text} ({UNKNOWN_GROUP_HINT})"),
        ClientError::Refused { code, text } => format!("{}: {text}", code.as_str()),
        other => other.to_string(),
    }
}

/// Whether the error means the session is over (no point in going on).
fn is_fatal(e: &ClientError) -> bool {
    matches!(e, ClientError::Closed | ClientError::Io(_))
}

/// SIGINT and SIGTERM: sets `stop` and ends the session (so `recv` returns),
/// after `LEAVE` when `leave` (a `chat --p2p` leaves the directory); exits 0
/// if the main thread has not finished `grace` later.
fn on_interrupt(client: &Arc<Client>, stop: &Arc<AtomicBool>, grace: Duration, leave: bool) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        // Without a handler the default action (terminate) still applies.
        return;
    };
    let client = Arc::clone(client);
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        if signals.forever().next().is_some() {
            stop.store(true, Ordering::SeqCst);
            if leave {
                let _ = client.leave();
            }
            let _ = client.quit();
            thread::sleep(grace);
            std::process::exit(0);
        }
    });
}

// ---------------------------------------------------------------------------
// pub
// ---------------------------------------------------------------------------

/// `switchboard pub`: publish one message, or each line of standard input.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "switchboard pub --user NAME --group G [OPTIONS] [ADDR] [MESSAGE]",
    after_help = "Arguments are taken by their position, never by what they look like: \
one argument is the MESSAGE; two are ADDR then MESSAGE. `--addr ADDR` and \
`-m MESSAGE` name them instead (`-m` takes no positional MESSAGE beside it; \
with `-m`, give the server as --addr).\n\
Without a MESSAGE, each line of standard input is \
published as one message, without its line ending; empty lines are skipped \
(give the server as --addr then).\n\
Exits 0 once every message was acknowledged by the server; on a refusal \
(e.g. unknown-group) it stops and exits 1 with `code: text` on standard error."
)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Group to publish to; repeatable, or comma-separated (`--group 1,2`):
    /// one message reaches each subscriber of any of them exactly once.
    #[arg(
        long,
        short = 'g',
        value_name = "G",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(1..),
        required_unless_present = "to"
    )]
    group: Vec<u32>,
    /// Send one-to-one to USER instead of (or as well as) publishing to groups.
    #[arg(long, value_name = "USER")]
    to: Option<String>,
    /// The message (instead of a positional MESSAGE).
    #[arg(long, short = 'm', value_name = "MESSAGE")]
    message: Option<String>,
    /// [ADDR] [MESSAGE]: one argument is the MESSAGE, two are ADDR then MESSAGE.
    #[arg(value_name = "ARGS", num_args = 0..=2, hide = true)]
    positional: Vec<String>,
}

/// Splits pub's positionals into (address, message) by position alone
/// (cli.md): one is the MESSAGE, two are ADDR then MESSAGE; with `-m`, none.
fn pub_positionals(
    args: &[String],
    flag_message: bool,
) -> Result<(Option<String>, Option<String>), String> {
    match (args, flag_message) {
        ([], _) => Ok((None, None)),
        ([message], false) => Ok((None, Some(message.clone()))),
        ([addr, message], false) => Ok((Some(addr.clone()), Some(message.clone()))),
        ([one], true) => Err(format!(
            "the message is given twice (-m and {one:?}): a lone argument is the MESSAGE; \
             give the server as --addr {one}"
        )),
        (_, true) => Err(format!(
            "-m and {args:?}: with -m give no positional MESSAGE (the server goes in --addr)"
        )),
        _ => Err(format!(
            "unexpected arguments {args:?}: expected [ADDR] [MESSAGE] (quote a message \
             that has spaces)"
        )),
    }
}

pub(crate) fn run_pub(args: PubArgs) -> ExitCode {
    let (addr, positional_message) = match pub_positionals(&args.positional, args.message.is_some())
    {
        Ok(v) => v,
        Err(e) => return fail("pub", &e),
    };
    let message = args.message.clone().or(positional_message);
    let client = match args.conn.connect(addr.as_deref()) {
        Ok(c) => c,
        Err(e)
            if addr
                .as_deref()
                .is_some_and(|a| !a.contains(':') || a.contains(char::is_whitespace)) =>
        {
            // Two arguments: the first, taken as the server, cannot be one.
            let hint = "with two arguments the first is the server address: [ADDR] [MESSAGE]";
            return fail("pub", &format!("{e} ({hint})"));
        }
        Err(e) => return fail("pub", &e),
    };
    let deliver = |payload: &[u8]| -> Result<(), ClientError> {
        if !args.group.is_empty() {
            client.publish(&args.group, payload)?;
        }
        if let Some(user) = &args.to {
            client.send(user, payload)?;
        }
        Ok(())
    };
    let outcome = match message {
        Some(m) => deliver(m.as_bytes()),
        None => {
            let stdin = io::stdin();
            let mut lock = stdin.lock();
            let mut line = Vec::new();
            loop {
                line.clear();
                match lock.read_until(b'\n', &mut line) {
                    Ok(0) => break Ok(()),
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        if line.is_empty() {
                            continue;
                        }
                        if let Err(e) = deliver(&line) {
                            break Err(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = client.quit();
                        return fail("pub", &format!("cannot read standard input: {e}"));
                    }
                }
            }
        }
    };
    let _ = client.quit();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("pub", &describe_error(&e)),
    }
}

// ---------------------------------------------------------------------------
// sub
// ---------------------------------------------------------------------------

/// `switchboard sub`: print each message received, one a line.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Prints the payload of each message published to the groups, \
followed by a newline, and flushes after each one (so it works in a pipe). \
One-to-one messages are not printed. Exits 0 after --count messages, on SIGINT \
or SIGTERM, when the server closes the connection (unless --reconnect), or when \
standard output is closed (e.g. piped into `head`)."
)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Group to subscribe to; repeatable, or comma-separated (`--group 1,2`).
    #[arg(
        long,
        short = 'g',
        value_name = "G",
        required = true,
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    group: Vec<u32>,
    /// Exit after N messages.
    #[arg(long, short = 'n', short_alias = 'C', value_name = "N")]
    count: Option<u64>,
    /// Print `[G] sender: payload` instead of the bare payload.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Server address `host:port`, or a URL tcp://, tls://, ws://, wss://
    /// [default: 127.0.0.1:7420, or 127.0.0.1:7421 with TLS].
    #[arg(value_name = "ADDR")]
    address: Option<String>,
}

pub(crate) fn run_sub(args: SubArgs) -> ExitCode {
    if args.count == Some(0) {
        return ExitCode::SUCCESS;
    }
    let client = match args.conn.connect(args.address.as_deref()) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail("sub", &e),
    };
    if let Err(e) = client.subscribe(&args.group) {
        let _ = client.quit();
        return fail(
            "sub",
            &format!(
                "cannot subscribe to {}: {}",
                group_list(&args.group),
                describe_error(&e)
            ),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    // A second for the main thread to finish the line it may be writing.
    on_interrupt(&client, &stop, Duration::from_secs(1), false);
    let stdout = io::stdout();
    let mut received = 0u64;
    loop {
        let push = match client.recv(None) {
            Ok(p) => p,
            Err(ClientError::Timeout) => continue,
            Err(e) => {
                if !stop.load(Ordering::SeqCst) && !matches!(e, ClientError::Closed) {
                    eprintln!("switchboard sub: {}", describe_error(&e));
                }
                return ExitCode::SUCCESS;
            }
        };
        match push {
            Push::Published {
                sender,
                groups,
                payload,
            } => {
                let mut out = stdout.lock();
                let written = if args.verbose {
                    write!(out, "[{}] {sender}: ", group_list(&groups))
                        .and_then(|()| out.write_all(&payload))
                } else {
                    out.write_all(&payload)
                }
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
                drop(out);
                if let Err(e) = written {
                    let _ = client.quit();
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        // The reader went away (`| head`): a normal end.
                        return ExitCode::SUCCESS;
                    }
                    return fail("sub", &format!("cannot write to standard output: {e}"));
                }
                received += 1;
                if args.count.is_some_and(|n| received >= n) {
                    let _ = client.quit();
                    return ExitCode::SUCCESS;
                }
            }
            Push::Disconnected if args.conn.reconnect => {
                eprintln!("switchboard sub: connection lost; reconnecting");
            }
            Push::Reconnected => eprintln!("switchboard sub: reconnected"),
            Push::Disconnected => {
                if !stop.load(Ordering::SeqCst) {
                    eprintln!("switchboard sub: the server closed the connection");
                }
                return ExitCode::SUCCESS;
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------

/// `switchboard chat`: an interactive line client.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Reads lines from standard input (a terminal or a pipe):\n  \
/join G       subscribe to group G (a number, or a name /groups lists), watch who \
joins and leaves it, and make it current\n  \
/part G       leave group G\n  \
/msg USER TEXT  send TEXT to USER only\n  \
/who [G]      users online, or in group G\n  \
/groups       the server's groups\n  \
/hello        server information\n  \
/ping         round-trip time\n  \
/quit         leave (so does end of input)\n  \
TEXT          publish TEXT to the current group (`//text` sends `/text`)\n\
With --p2p (peer to peer, not through the server):\n  \
/peers        the server's directory: who takes direct messages, and where\n  \
/direct USER TEXT  look USER up in the directory, connect to that peer and \
deliver TEXT there (with the server gone, to the address last looked up)\n\
Output, one line each:\n  \
[G] alice: text     a message published to group G (your own included)\n  \
* alice: text       a one-to-one message from alice\n  \
-> bob: text        your one-to-one message to bob, once delivered\n  \
[direct] alice: text     a message alice's peer delivered to yours\n  \
[direct] -> bob: text    your direct message, once bob's peer acknowledged it\n  \
* bob joined G / * bob left G\n  \
* ...               replies to commands\n  \
! code: text        a refused command\n\
--p2p listens for direct connections (on --p2p-listen, by default the address \
this client connects to the server from, any free port), BINDs that endpoint in \
the server's directory after login (the server checks it with a PING), answers \
the server's probes, and LEAVEs the directory on exit. Peers do not log in to \
each other: a direct message's sender is the name the sending peer gave.\n\
Exits 0 on /quit or end of input, 1 if the server closes the connection \
(with --p2p it goes on, for direct messages, until /quit)."
)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Also be a peer: listen for direct messages, BIND the endpoint in the
    /// server's directory, and add /peers and /direct USER TEXT.
    #[arg(long)]
    p2p: bool,
    /// Where the peer endpoint listens: IP or IP:PORT (port 0: any free one)
    /// [default: the IP this client connects to the server from, port 0].
    /// The server accepts a BIND only of the address the session connects
    /// from.
    #[arg(long, value_name = "ADDR", requires = "p2p")]
    p2p_listen: Option<String>,
    /// Server address `host:port`, or a URL tcp://, tls://, ws://, wss://
    /// [default: 127.0.0.1:7420, or 127.0.0.1:7421 with TLS].
    #[arg(value_name = "ADDR")]
    address: Option<String>,
}

/// Writes one line to standard output; a closed output ends the program quietly.
fn say(line: &str) {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        // Nobody reads us any more (`chat | head`): leave like /quit.
        std::process::exit(0);
    }
}

/// A pushed frame as a chat line.
fn push_line(push: &Push) -> Option<String> {
    let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    Some(match push {
        Push::Published {
            sender,
            groups,
            payload,
        } => format!("[{}] {sender}: {}", group_list(groups), text(payload)),
        Push::Message { sender, payload } => format!("* {sender}: {}", text(payload)),
        Push::Joined { user, group } => format!("* {user} joined {group}"),
        Push::Parted { user, group } => format!("* {user} left {group}"),
        Push::Disconnected => "* connection lost".to_string(),
        Push::Reconnected => "* reconnected".to_string(),
        #[allow(unreachable_patterns)] // `Push` may grow variants
        _ => return None,
    })
}

/// Parses a group number argument of a chat command.
fn parse_group(arg: &str) -> Result<u32, String> {
    match arg.parse::<u32>() {
        Ok(g) if g > 0 => Ok(g),
        _ => Err(format!(
            "bad-args: {arg:?} is not a group number (1 to 4294967295)"
        )),
    }
}

/// The group a chat command's argument names: a number, or a name from the
/// server's `GROUPS` (`known`, asked for once, when the first name comes),
/// compared without regard to case.
fn lookup_group(
    client: &Client,
    arg: &str,
    known: &mut Option<Vec<(u32, String)>>,
) -> Result<Result<u32, String>, ClientError> {
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(parse_group(arg));
    }
    let list = match known {
        Some(list) => list,
        None => known.insert(client.groups()?),
    };
    Ok(list
        .iter()
        .find(|(_, name)| !name.is_empty() && name.eq_ignore_ascii_case(arg))
        .map(|(id, _)| *id)
        .ok_or_else(|| {
            format!(
                "unknown-group: no group named {arg:?} on this server (/groups lists them; \
                 {UNKNOWN_GROUP_HINT})"
            )
        }))
}

/// What one input line asks for.
enum Step {
    Go,
    Quit,
}

struct Chat {
    client: Arc<Client>,
    /// The group a plain line is published to.
    current: Option<u32>,
    /// `--reconnect`: a lost connection is not the end.
    reconnect: bool,
    /// `--p2p`: the peer side.
    p2p: Option<P2p>,
}

/// The peer side of a `chat --p2p`.
struct P2p {
    /// The user name messages are sent as.
    user: String,
    /// The last directory entry seen for each user (lower case), so that
    /// direct messages go on while the server is away.
    known: HashMap<String, DirectoryEntry>,
}

/// How long a direct delivery may take: connect, write, ACK.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Chat {
    fn line(&mut self, line: &str) -> Step {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Step::Go;
        }
        if let Some(rest) = line.strip_prefix("//") {
            self.publish(&format!("/{rest}"));
            return Step::Go;
        }
        let Some(cmd) = line.strip_prefix('/') else {
            self.publish(line);
            return Step::Go;
        };
        let (name, rest) = match cmd.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim_start()),
            None => (cmd, ""),
        };
        let outcome = match name.to_ascii_lowercase().as_str() {
            "join" | "j" => self.join(rest),
            "part" | "leave" => self.part(rest),
            "msg" | "m" => self.msg(rest),
            "who" => self.who(rest),
            "groups" | "list" => self.groups(),
            "hello" => self.hello(),
            "peers" => self.peers(),
            "direct" | "d" => self.direct(rest),
            "ping" => self.client.ping().map(|rtt| {
                say(&format!("* pong in {:.1} ms", rtt.as_secs_f64() * 1000.0));
            }),
            "help" | "?" => {
                say(
                    "* commands: /join G, /part G, /msg USER TEXT, /who [G], /groups, /hello, /ping, \
                     /peers, /direct USER TEXT (with --p2p), /quit",
                );
                Ok(())
            }
            "quit" | "exit" | "q" => return Step::Quit,
            other => {
                say(&format!("! unknown command /{other} (try /help)"));
                Ok(())
            }
        };
        match outcome {
            Ok(()) => Step::Go,
            Err(e) => {
                say(&format!("! {}", describe_error(&e)));
                // A peer goes on without the server: direct messages.
                if is_fatal(&e) && !self.reconnect && self.p2p.is_none() {
                    Step::Quit
                } else {
                    Step::Go
                }
            }
        }
    }

    /// The groups of a `/join` or `/part`: numbers or names, separated by
    /// spaces or commas. On a bad one, says why and returns none.
    fn groups_arg(&self, rest: &str) -> Result<Vec<u32>, ClientError> {
        let mut groups = Vec::new();
        let mut known = None;
        for a in rest.split([' ', ',']).filter(|a| !a.is_empty()) {
            match lookup_group(&self.client, a, &mut known)? {
                Ok(g) => groups.push(g),
                Err(e) => {
                    say(&format!("! {e}"));
                    return Ok(Vec::new());
                }
            }
        }
        Ok(groups)
    }

    fn publish(&mut self, text: &str) {
        let Some(g) = self.current else {
            say("! join a group first (/join G)");
            return;
        };
        if let Err(e) = self.client.publish(&[g], text.as_bytes()) {
            say(&format!("! {}", describe_error(&e)));
        }
    }

    fn join(&mut self, rest: &str) -> Result<(), ClientError> {
        let groups = self.groups_arg(rest)?;
        let Some(&last) = groups.last() else {
            if rest.trim().is_empty() {
                say("! usage: /join G (a group number or name; /groups lists them)");
            }
            return Ok(());
        };
        self.client.subscribe(&groups)?;
        // Watching shows who joins and leaves; a refusal here is not worth
        // failing the join for.
        if let Err(e) = self.client.watch(&groups) {
            say(&format!("! {}", describe_error(&e)));
        }
        self.current = Some(last);
        say(&format!(
            "* joined {}; now talking in {last}",
            group_list(&groups)
        ));
        Ok(())
    }

    fn part(&mut self, rest: &str) -> Result<(), ClientError> {
        let groups = if rest.trim().is_empty() {
            self.current.into_iter().collect()
        } else {
            self.groups_arg(rest)?
        };
        if groups.is_empty() {
            say("! usage: /part G");
            return Ok(());
        }
        // Unwatch first: our own leaving is not news to us (nor is our join,
        // which happens before the watch).
        let _ = self.client.unwatch(&groups);
        self.client.unsubscribe(&groups)?;
        if self.current.is_some_and(|c| groups.contains(&c)) {
            self.current = None;
        }
        say(&format!("* left {}", group_list(&groups)));
        Ok(())
    }

    fn msg(&mut self, rest: &str) -> Result<(), ClientError> {
        let Some((user, text)) = rest.split_once(char::is_whitespace) else {
            say("! usage: /msg USER TEXT");
            return Ok(());
        };
        self.client.send(user, text.as_bytes())?;
        say(&format!("-> {user}: {text}"));
        Ok(())
    }

    fn who(&mut self, rest: &str) -> Result<(), ClientError> {
        let group = match rest.trim() {
            "" => None,
            g => match lookup_group(&self.client, g, &mut None)? {
                Ok(g) => Some(g),
                Err(e) => {
                    say(&format!("! {e}"));
                    return Ok(());
                }
            },
        };
        let users = self.client.who(group)?;
        let list = if users.is_empty() {
            "(nobody)".to_string()
        } else {
            users.join(", ")
        };
        match group {
            Some(g) => say(&format!("* in {g}: {list}")),
            None => say(&format!("* online: {list}")),
        }
        Ok(())
    }

    fn groups(&mut self) -> Result<(), ClientError> {
        let groups = self.client.groups()?;
        if groups.is_empty() {
            say("* groups: (none registered)");
        } else {
            let list = groups
                .iter()
                .map(|(id, name)| {
                    if name.is_empty() {
                        id.to_string()
                    } else {
                        format!("{id} ({name})")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            say(&format!("* groups: {list}"));
        }
        Ok(())
    }

    /// `/peers`: the directory (QUERY).
    fn peers(&mut self) -> Result<(), ClientError> {
        let Some(p2p) = self.p2p.as_mut() else {
            say("! /peers needs --p2p (chat --p2p)");
            return Ok(());
        };
        let entries = self.client.query(None)?;
        for e in &entries {
            p2p.known.insert(e.user.to_ascii_lowercase(), e.clone());
        }
        if entries.is_empty() {
            say("* peers: (nobody is bound)");
        } else {
            let list = entries
                .iter()
                .map(|e| format!("{} at {}", e.user, e.socket_addr()))
                .collect::<Vec<_>>()
                .join(", ");
            say(&format!("* peers: {list}"));
        }
        Ok(())
    }

    /// `/direct USER TEXT`: QUERY USER, then deliver to that peer.
    fn direct(&mut self, rest: &str) -> Result<(), ClientError> {
        let Some(p2p) = self.p2p.as_mut() else {
            say("! /direct needs --p2p (chat --p2p)");
            return Ok(());
        };
        let Some((user, text)) = rest.split_once(char::is_whitespace) else {
            say("! usage: /direct USER TEXT");
            return Ok(());
        };
        let key = user.to_ascii_lowercase();
        let entry = match self.client.query(Some(user)) {
            Ok(entries) => match entries
                .into_iter()
                .find(|e| e.user.eq_ignore_ascii_case(user))
            {
                Some(e) => {
                    p2p.known.insert(key, e.clone());
                    e
                }
                None => {
                    p2p.known.remove(&key);
                    say(&format!(
                        "! {user} is not in the directory (not bound, or gone: /peers lists who is)"
                    ));
                    return Ok(());
                }
            },
            // Refused (bad-args for a bad name, ...): say so.
            Err(e @ ClientError::Refused { .. }) => return Err(e),
            // The server is away: the last known endpoint, if any.
            Err(e) => match p2p.known.get(&key) {
                Some(known) => {
                    say(&format!(
                        "* the directory is unreachable ({e}); using {user}'s last known endpoint {}",
                        known.socket_addr()
                    ));
                    known.clone()
                }
                None => {
                    say(&format!(
                        "! cannot look {user} up: the directory is unreachable ({e}), \
                         and {user} was not looked up before"
                    ));
                    return Ok(());
                }
            },
        };
        let at = entry.socket_addr();
        match peer::deliver(at, &p2p.user, text.as_bytes(), DIRECT_TIMEOUT) {
            Ok(_) => say(&format!("[direct] -> {}: {text}", entry.user)),
            Err(e) => say(&format!("! {}", describe_peer_error(&entry.user, at, &e))),
        }
        Ok(())
    }

    fn hello(&mut self) -> Result<(), ClientError> {
        let info = self.client.hello()?;
        let list = info
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        say(&format!("* server: {list}"));
        Ok(())
    }
}

/// One line for a direct delivery that failed.
fn describe_peer_error(user: &str, at: SocketAddr, e: &PeerError) -> String {
    match e {
        PeerError::Io(io) => format!("cannot reach {user}'s peer at {at}: {io}"),
        PeerError::Timeout => format!(
            "{user}'s peer at {at} did not answer within {} s",
            DIRECT_TIMEOUT.as_secs()
        ),
        PeerError::Refused { code, text } => {
            format!("{user}'s peer at {at} refused the message: {code}: {text}")
        }
        PeerError::Closed => format!("{user}'s peer at {at} closed the connection without an ACK"),
        other => format!("{user}'s peer at {at}: {other}"),
    }
}

/// `--p2p-listen`: `IP`, `IP:PORT` or `[IPv6]:PORT`.
fn parse_listen(arg: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = arg.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    arg.parse::<SocketAddr>().map_err(|_| {
        format!("--p2p-listen {arg:?}: expected an IP address, IP:PORT or [IPv6]:PORT")
    })
}

/// Starts the peer endpoint (messages printed as `[direct] sender: text`)
/// on `listen`, by default the IP the client connects from; returns it and
/// the address to BIND.
fn start_peer(
    client: &Client,
    listen: Option<SocketAddr>,
) -> Result<(PeerEndpoint, SocketAddr), String> {
    let local = client
        .local_addr()
        .ok_or_else(|| "the connection's own address is unknown".to_string())?;
    let addr = listen.unwrap_or_else(|| SocketAddr::new(local.ip(), 0));
    let endpoint = PeerEndpoint::bind_with(PeerConfig::new(addr), |m| {
        say(&format!(
            "[direct] {}: {}",
            m.sender,
            String::from_utf8_lossy(&m.payload)
        ));
    })
    .map_err(|e| format!("cannot listen for peers on {addr}: {e}"))?;
    let mut at = endpoint.local_addr();
    if at.ip().is_unspecified() {
        // Listening everywhere: the directory gets the address the server sees.
        at.set_ip(local.ip());
    }
    Ok((endpoint, at))
}

/// BINDs `at` in the directory and says how it went.
fn bind_peer(client: &Client, at: SocketAddr) {
    match client.bind(at.ip(), at.port()) {
        Ok(_) => say(&format!(
            "* direct messages: listening on {at}, bound in the directory"
        )),
        Err(e) => {
            let hint = match &e {
                ClientError::Refused {
                    code: ErrorCode::Forbidden,
                    ..
                } => match client.local_addr() {
                    Some(local) => format!(
                        " (the server takes only the address this client connects from, {}: \
                         leave out --p2p-listen or give that address)",
                        local.ip()
                    ),
                    None => String::new(),
                },
                ClientError::Refused {
                    code: ErrorCode::Unreachable,
                    ..
                } => format!(" (the server could not reach {at}: a firewall or NAT between them?)"),
                ClientError::Refused {
                    code: ErrorCode::UnknownCommand,
                    ..
                } => " (this server has no directory)".to_string(),
                _ => String::new(),
            };
            say(&format!(
                "! cannot BIND {at} in the directory: {}{hint}; others cannot find this peer \
                 (/direct still sends)",
                describe_error(&e)
            ));
        }
    }
}

pub(crate) fn run_chat(args: ChatArgs) -> ExitCode {
    let listen = match args.p2p_listen.as_deref().map(parse_listen).transpose() {
        Ok(l) => l,
        Err(e) => return fail("chat", &e),
    };
    let client = match args.conn.connect(args.address.as_deref()) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail("chat", &e),
    };
    let reconnect = args.conn.reconnect;
    let p2p = args.p2p;
    let peer = if p2p {
        match start_peer(&client, listen) {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = client.quit();
                return fail("chat", &e);
            }
        }
    } else {
        None
    };
    let bound_at = peer.as_ref().map(|(_, at)| *at);
    let stop = Arc::new(AtomicBool::new(false));
    // The main thread is blocked reading input: no reason to wait for it.
    on_interrupt(&client, &stop, Duration::ZERO, p2p);
    // Pushes are printed by their own thread, so they appear while the main
    // thread waits for input. It ends the program when the session is over
    // (a peer goes on without the server, for direct messages).
    {
        let client = Arc::clone(&client);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let server_gone = || {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if p2p {
                    say(
                        "* the server closed the connection; direct messages go on (/direct, /quit to leave)",
                    );
                } else {
                    say("* the server closed the connection");
                    std::process::exit(1);
                }
            };
            loop {
                match client.recv(None) {
                    Ok(Push::Disconnected) if !reconnect => return server_gone(),
                    Ok(Push::Reconnected) => {
                        say("* reconnected");
                        // The server may have forgotten the entry (a restart).
                        if let Some(at) = bound_at {
                            bind_peer(&client, at);
                        }
                    }
                    Ok(push) => {
                        if let Some(line) = push_line(&push) {
                            say(&line);
                        }
                    }
                    Err(ClientError::Timeout) => {}
                    Err(_) => return server_gone(),
                }
            }
        });
    }
    let user = args.conn.user.clone();
    if io::stdin().is_terminal() {
        say(&format!(
            "* connected as {user}; /join G to talk in a group, /help for commands"
        ));
    }
    if let Some(at) = bound_at {
        bind_peer(&client, at);
    }
    let mut chat = Chat {
        client: Arc::clone(&client),
        current: None,
        reconnect,
        p2p: p2p.then(|| P2p {
            user: user.clone(),
            known: HashMap::new(),
        }),
    };
    let stdin = io::stdin();
    let mut lock = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lock.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if let Step::Quit = chat.line(&line) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("switchboard chat: cannot read standard input: {e}");
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    if p2p {
        // Out of the directory first, then the endpoint stops answering.
        let _ = client.leave();
    }
    let _ = client.quit();
    drop(peer);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::Args;
        let cmd = clap::Command::new("switchboard")
            .subcommand(ChatArgs::augment_args(clap::Command::new("chat")))
            .subcommand(PubArgs::augment_args(clap::Command::new("pub")))
            .subcommand(SubArgs::augment_args(clap::Command::new("sub")));
        cmd.debug_assert();
    }

    /// cli.md: by position, never by content. One is the MESSAGE (even if
    /// it looks like an address), two are ADDR then MESSAGE; `-m` takes none.
    #[test]
    fn pub_positionals_go_by_position_only() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let split = |v: &[&str], m| pub_positionals(&s(v), m);
        assert_eq!(split(&[], false), Ok((None, None)));
        assert_eq!(split(&[], true), Ok((None, None)));
        for one in ["hi", "127.0.0.1:1", "localhost:7420", "12:30"] {
            assert_eq!(split(&[one], false), Ok((None, Some(one.into()))), "{one}");
        }
        for (a, b) in [("127.0.0.1:1", "hi"), ("hi", "127.0.0.1:1"), ("a", "b")] {
            assert_eq!(
                split(&[a, b], false),
                Ok((Some(a.into()), Some(b.into()))),
                "{a} {b}"
            );
        }
        let twice = split(&["127.0.0.1:1"], true).expect_err("-m and a MESSAGE");
        assert!(twice.contains("--addr 127.0.0.1:1"), "{twice}");
        assert!(split(&["a", "b"], true).is_err());
    }

    #[test]
    fn p2p_listen_takes_an_ip_or_an_ip_and_port() {
        let ok = |a: &str| parse_listen(a).map(|s| s.to_string());
        assert_eq!(ok("127.0.0.1"), Ok("127.0.0.1:0".into()));
        assert_eq!(ok("0.0.0.0:7000"), Ok("0.0.0.0:7000".into()));
        assert_eq!(ok("::1"), Ok("[::1]:0".into()));
        assert_eq!(ok("[::1]:7000"), Ok("[::1]:7000".into()));
        for bad in ["localhost", "127.0.0.1:x", "", ":7000"] {
            let e = parse_listen(bad).expect_err(bad);
            assert!(e.contains("--p2p-listen"), "{e}");
        }
    }

    #[test]
    fn peer_errors_name_the_user_and_the_address() {
        let at: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let refused = PeerError::Refused {
            code: ErrorCode::Busy,
            text: "full".into(),
        };
        assert_eq!(
            describe_peer_error("bob", at, &refused),
            "bob's peer at 127.0.0.1:5000 refused the message: busy: full"
        );
        let timeout = describe_peer_error("bob", at, &PeerError::Timeout);
        assert!(timeout.contains("did not answer within 5 s"), "{timeout}");
    }

    #[test]
    fn unknown_group_says_where_groups_come_from() {
        let e = ClientError::Refused {
            code: ErrorCode::UnknownGroup,
            text: "group 5 does not exist".into(),
        };
        let line = describe_error(&e);
        assert!(
            line.starts_with("unknown-group: group 5 does not exist ("),
            "{line}"
        );
        assert!(
            line.contains("--group ID=NAME") && line.contains("--open-groups"),
            "{line}"
        );
        let e = ClientError::Refused {
            code: ErrorCode::Forbidden,
            text: "no".into(),
        };
        assert_eq!(describe_error(&e), "forbidden: no");
    }
}

// ---------------------------------------------------------------------------
// request
// ---------------------------------------------------------------------------

/// The most `request` reads from standard input, and `reply` takes from a
/// command's output: the server's default `max_payload`.
const MAX_BODY: usize = 1 << 20;

/// `switchboard request`: send one request to a group, print the reply.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "switchboard request --user NAME --group G [OPTIONS] [ADDR] [MESSAGE]",
    after_help = "Arguments are taken by their position, never by what they look like: \
one argument is the MESSAGE; two are ADDR then MESSAGE (`--addr ADDR` and `-m MESSAGE` \
name them instead). Without a MESSAGE the request is all of standard input (at most 1 MiB).\n\
One responder of the group (a queue member first, e.g. `switchboard reply`) answers; \
its reply is printed to standard output (with a newline added if it has none) and the \
exit status is 0. When nobody answers for the group (no-responders), nobody answers \
in time (timeout) or the server refuses, it exits 1 with `code: text` on standard error."
)]
pub(crate) struct RequestArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// The group to send the request to.
    #[arg(long, short = 'g', value_name = "G", value_parser = clap::value_parser!(u32).range(1..))]
    group: u32,
    /// How long the server waits for a reply, in milliseconds (1 to 60000).
    #[arg(
        long,
        short = 't',
        value_name = "MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u32).range(1..=60_000)
    )]
    timeout: u32,
    /// The request (instead of a positional MESSAGE).
    #[arg(long, short = 'm', value_name = "MESSAGE")]
    message: Option<String>,
    /// [ADDR] [MESSAGE]: one argument is the MESSAGE, two are ADDR then MESSAGE.
    #[arg(value_name = "ARGS", num_args = 0..=2, hide = true)]
    positional: Vec<String>,
}

/// Reads all of `input`, at most `limit` bytes (`None` if there is more).
fn read_bounded(input: &mut impl io::Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut buf = Vec::new();
    input
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut buf)?;
    Ok((buf.len() <= limit).then_some(buf))
}

pub(crate) fn run_request(args: RequestArgs) -> ExitCode {
    let (addr, positional_message) = match pub_positionals(&args.positional, args.message.is_some())
    {
        Ok(v) => v,
        Err(e) => return fail("request", &e),
    };
    let payload = match args.message.clone().or(positional_message) {
        Some(m) => m.into_bytes(),
        None => match read_bounded(&mut io::stdin().lock(), MAX_BODY) {
            Ok(Some(body)) => body,
            Ok(None) => return fail("request", "standard input is over 1 MiB"),
            Err(e) => return fail("request", &format!("cannot read standard input: {e}")),
        },
    };
    let client = match args.conn.connect(addr.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail("request", &e),
    };
    let outcome = client.request(
        args.group,
        &payload,
        Duration::from_millis(u64::from(args.timeout)),
    );
    let _ = client.quit();
    match outcome {
        Ok(reply) => {
            let mut out = io::stdout().lock();
            let written = out
                .write_all(&reply)
                .and_then(|()| {
                    if reply.last() == Some(&b'\n') {
                        Ok(())
                    } else {
                        out.write_all(b"\n")
                    }
                })
                .and_then(|()| out.flush());
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail("request", &format!("cannot write to standard output: {e}")),
            }
        }
        Err(e) => fail("request", &describe_error(&e)),
    }
}

// ---------------------------------------------------------------------------
// reply
// ---------------------------------------------------------------------------

/// `switchboard reply`: answer each request by running a command.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "switchboard reply --user NAME --group G [OPTIONS] [ADDR] -- COMMAND...",
    after_help = "Subscribes to the groups (with --queue, joins that queue group on them \
instead, so that several `reply` processes share the work), then answers each request \
(and survey) in turn: COMMAND runs with the request's payload on standard input, and \
what it writes to standard output is the reply (whatever its exit status; its standard \
error passes through). COMMAND is run directly, not through a shell (use `-- sh -c '...'` \
for one).\n\
A command still running after --command-timeout is killed and the request is left \
unanswered (the requester gets timeout); so is one whose output is over --max-output. \
Exits 0 after --count answers, on SIGINT or SIGTERM, or when the server closes the \
connection (unless --reconnect)."
)]
pub(crate) struct ReplyArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Group to answer for; repeatable, or comma-separated (`--group 1,2`).
    #[arg(
        long,
        short = 'g',
        value_name = "G",
        required = true,
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    group: Vec<u32>,
    /// Join this queue group instead of subscribing: each request goes to
    /// one member of the queue.
    #[arg(long, short = 'q', value_name = "Q")]
    queue: Option<String>,
    /// Kill COMMAND after this many milliseconds (the server's default
    /// request timeout).
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    command_timeout: u64,
    /// The most output a reply may have, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = MAX_BODY)]
    max_output: usize,
    /// Exit after answering N requests.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Server address `host:port`, or a URL tcp://, tls://, ws://, wss://
    /// [default: 127.0.0.1:7420, or 127.0.0.1:7421 with TLS].
    #[arg(value_name = "ADDR")]
    address: Option<String>,
    /// The command that answers, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Why a command gave no reply.
enum RunError {
    Spawn(io::Error),
    TimedOut,
    TooLarge,
    Io(io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot run the command: {e}"),
            Self::TimedOut => f.write_str("the command ran too long and was killed"),
            Self::TooLarge => f.write_str("the command's output is too large; it was killed"),
            Self::Io(e) => write!(f, "cannot talk to the command: {e}"),
        }
    }
}

/// Runs `command` with `input` on its standard input; its standard output,
/// at most `max` bytes, within `limit` (else it is killed).
fn run_bounded(
    command: &[String],
    input: &[u8],
    limit: Duration,
    max: usize,
) -> Result<Vec<u8>, RunError> {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let (program, rest) = command.split_first().ok_or_else(|| {
        RunError::Spawn(io::Error::new(io::ErrorKind::InvalidInput, "no command"))
    })?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(RunError::Spawn)?;
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        if let Some(w) = stdin.as_mut() {
            // A command that does not read its input is fine.
            let _ = w.write_all(&input);
        }
        drop(stdin);
    });
    let mut stdout = child.stdout.take();
    let reader = thread::spawn(move || match stdout.as_mut() {
        Some(r) => read_bounded(r, max),
        None => Ok(Some(Vec::new())),
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            // An output over `max` stops the reading: the command then
            // gets SIGPIPE, or runs into the deadline.
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Io(e));
            }
        }
    }
    // Something the command started may still hold its output open: wait
    // for the end of it until the deadline only (the reader is then left).
    while !reader.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if !reader.is_finished() {
        return Err(RunError::TimedOut);
    }
    if writer.is_finished() {
        let _ = writer.join();
    }
    let output = reader
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("reader panicked")));
    if timed_out {
        return Err(RunError::TimedOut);
    }
    match output {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(RunError::TooLarge),
        Err(e) => Err(RunError::Io(e)),
    }
}

pub(crate) fn run_reply(args: ReplyArgs) -> ExitCode {
    if args.count == Some(0) {
        return ExitCode::SUCCESS;
    }
    let client = match args.conn.connect(args.address.as_deref()) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail("reply", &e),
    };
    let joined = match &args.queue {
        Some(q) => client.qsubscribe(q, &args.group),
        None => client.subscribe(&args.group),
    };
    if let Err(e) = joined {
        let _ = client.quit();
        return fail(
            "reply",
            &format!(
                "cannot answer for {}: {}",
                group_list(&args.group),
                describe_error(&e)
            ),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    on_interrupt(&client, &stop, Duration::from_secs(1), false);
    let limit = Duration::from_millis(args.command_timeout);
    let mut answered = 0u64;
    loop {
        let push = match client.recv(None) {
            Ok(p) => p,
            Err(ClientError::Timeout) => continue,
            Err(e) => {
                if !stop.load(Ordering::SeqCst) && !matches!(e, ClientError::Closed) {
                    eprintln!("switchboard reply: {}", describe_error(&e));
                }
                return ExitCode::SUCCESS;
            }
        };
        let (sender, rid, payload) = match push {
            Push::Requested {
                sender,
                rid,
                payload,
                ..
            }
            | Push::Surveyed {
                sender,
                rid,
                payload,
                ..
            } => (sender, rid, payload),
            Push::Disconnected if args.conn.reconnect => {
                eprintln!("switchboard reply: connection lost; reconnecting");
                continue;
            }
            Push::Reconnected => {
                eprintln!("switchboard reply: reconnected");
                continue;
            }
            Push::Disconnected => {
                if !stop.load(Ordering::SeqCst) {
                    eprintln!("switchboard reply: the server closed the connection");
                }
                return ExitCode::SUCCESS;
            }
            _ => continue,
        };
        match run_bounded(&args.command, &payload, limit, args.max_output) {
            Ok(output) => match client.reply(&rid, &output) {
                Ok(_) => {}
                Err(e) if is_fatal(&e) => {
                    eprintln!("switchboard reply: {}", describe_error(&e));
                    return ExitCode::FAILURE;
                }
                // Expired meanwhile (bad-args), or too large: go on.
                Err(e) => eprintln!(
                    "switchboard reply: the reply to {sender} was not taken: {}",
                    describe_error(&e)
                ),
            },
            Err(RunError::Spawn(e)) => {
                let _ = client.quit();
                return fail("reply", &format!("cannot run {:?}: {e}", args.command[0]));
            }
            Err(e) => eprintln!("switchboard reply: request from {sender} not answered: {e}"),
        }
        answered += 1;
        if args.count.is_some_and(|n| answered >= n) {
            let _ = client.quit();
            return ExitCode::SUCCESS;
        }
    }
}
