//! `switchboard serve`: flags and config file merged into a `ServerConfig`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use log::{LevelFilter, info, warn};
use serde::Deserialize;
use switchboard::acl::Acl;
use switchboard::certs::{self, CertError, DevCerts};
use switchboard::logging::Logger;
use switchboard::passwd::PasswordFile;
use switchboard::tls::{self, ClientAuth};
use switchboard::{AuthMode, Authenticator, Server, ServerConfig, ServerHandle};

const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
const DEFAULT_TLS_LISTEN: &str = "127.0.0.1:7421";
const DEFAULT_WS_LISTEN: &str = "127.0.0.1:7422";
const DEFAULT_WSS_LISTEN: &str = "127.0.0.1:7423";

/// Every flag of cli.md. Each is optional here so that a value from
/// `--config FILE` can fill what the command line leaves out.
#[derive(clap::Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeArgs {
    /// TOML file with the same settings (`_` for `-`); flags win over it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Plain TCP listener, or `off`; with --auth cert, off unless given
    /// [default: 127.0.0.1:7420].
    #[arg(long)]
    listen: Option<String>,
    /// TLS listener, or `off` [default: 127.0.0.1:7421].
    #[arg(long)]
    tls_listen: Option<String>,
    /// WebSocket listener (`ws://`, and the chat page on `GET /`), or `off`
    /// [default: 127.0.0.1:7422].
    #[arg(long)]
    ws_listen: Option<String>,
    /// WebSocket over TLS (`wss://`, and the chat page over HTTPS), with
    /// --cert, --key and the client-certificate settings, or `off`
    /// [default: 127.0.0.1:7423].
    #[arg(long)]
    wss_listen: Option<String>,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Server private key (PEM; PKCS#8, SEC1 or PKCS#1, or an encrypted PKCS#8 key).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Password of an encrypted --key: the file's first line (without it, a
    /// prompt when standard input is a terminal).
    #[arg(long, value_name = "FILE")]
    key_password_file: Option<PathBuf>,
    /// CA bundle for client certificates.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// `none`, `optional` or `required` (default: `none`; `required` with
    /// --auth cert).
    #[arg(long)]
    client_auth: Option<String>,
    /// `none`, `password` or `cert` [default: none].
    #[arg(long)]
    auth: Option<String>,
    /// Password file made by `switchboard passwd` (with --auth password only).
    #[arg(long)]
    passwd: Option<PathBuf>,
    /// Who may subscribe, publish, request, watch and send (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    acl: Option<PathBuf>,
    /// Register a group, `ID=NAME`; repeatable.
    #[arg(long = "group", value_name = "ID=NAME")]
    #[serde(default)]
    group: Vec<String>,
    /// Any group number may be used.
    #[arg(long)]
    #[serde(default)]
    open_groups: bool,
    /// Connection limit [default: 10000].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Payload limit in bytes [default: 1048576].
    #[arg(long)]
    max_payload: Option<usize>,
    /// Unsent output per connection before it is a slow consumer [default: 8388608].
    #[arg(long)]
    max_pending: Option<usize>,
    /// Seconds for handshake plus login [default: 10].
    #[arg(long)]
    login_timeout: Option<f64>,
    /// Seconds of silence before the server pings [default: 30].
    #[arg(long)]
    ping_interval: Option<f64>,
    /// Seconds to answer a ping [default: 10].
    #[arg(long)]
    ping_timeout: Option<f64>,
    /// Seconds between directory re-probes [default: 30].
    #[arg(long)]
    probe_interval: Option<f64>,
    /// Seconds the server keeps writing what clients are owed on shutdown [default: 10].
    #[arg(long)]
    drain_timeout: Option<f64>,
    /// Per session: group subscriptions and watches together [default: 10000].
    #[arg(long)]
    max_subscriptions: Option<usize>,
    /// Sessions one user may have at once [default: 64].
    #[arg(long)]
    max_sessions_per_user: Option<usize>,
    /// Groups created by use under --open-groups [default: 100000].
    #[arg(long)]
    max_open_groups: Option<usize>,
    /// `error`, `warn`, `info`, `debug` or `trace` [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// Also log to FILE (appended).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// HTTP listener serving `GET /metrics` (Prometheus text), or `off`
    /// [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Poll loops, one a thread; connections are spread over them [default: 1].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Join a cluster through Redis (`redis://[[USER]:PASSWORD@]HOST[:PORT]`,
    /// or `rediss://...` over TLS), or `off` [default: off].
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// With a `rediss://` cluster: the CA (PEM) Redis's certificates must
    /// chain to, for the URL's host name.
    #[arg(long, value_name = "FILE")]
    cluster_ca: Option<PathBuf>,
    /// With a `rediss://` cluster: a client certificate chain (PEM) for
    /// Redis's `tls-auth-clients`; needs --cluster-key.
    #[arg(long, value_name = "FILE")]
    cluster_cert: Option<PathBuf>,
    /// The private key (PEM) of --cluster-cert.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// This node's name in the cluster (by default the host name and the
    /// plain listener's port, e.g. `web-1:7420`).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
}

impl ServeArgs {
    /// Fills every unset field from `file`.
    fn merge(mut self, file: Self) -> Self {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        fill!(
            listen,
            metrics_listen,
            tls_listen,
            ws_listen,
            wss_listen,
            cert,
            key,
            key_password_file,
            client_ca,
            client_auth,
            auth,
            passwd,
            acl,
            max_connections,
            max_payload,
            max_pending,
            login_timeout,
            ping_interval,
            ping_timeout,
            probe_interval,
            drain_timeout,
            max_subscriptions,
            max_sessions_per_user,
            max_open_groups,
            log_level,
            log_file,
            threads,
            cluster,
            cluster_ca,
            cluster_cert,
            cluster_key,
            node
        );
        if self.group.is_empty() {
            self.group = file.group;
        }
        self.open_groups |= file.open_groups;
        self
    }
}

pub(crate) fn run(args: ServeArgs) -> ExitCode {
    let args = match &args.config {
        Some(path) => match load_file(path) {
            Ok(file) => args.merge(file),
            Err(e) => return fail(&e),
        },
        None => args,
    };
    if let Err(e) = init_logging(
        args.log_level.as_deref().unwrap_or("info"),
        args.log_file.as_deref(),
    ) {
        return fail(&e);
    }
    let (config, reload, banner) = match build_config(&args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // Server::local_addrs: plain, then TLS, WebSocket and WebSocket over TLS.
    let kinds: Vec<_> = [
        ("tcp", config.listen.len()),
        ("tls", config.tls_listen.len()),
        ("ws", config.ws_listen.len()),
        ("wss", config.wss_listen.len()),
    ]
    .into_iter()
    .flat_map(|(kind, n)| std::iter::repeat_n(kind, n))
    .collect();
    let (threads, cluster) = (config.threads, config.cluster.clone());
    let server = match Server::bind_threads(config, |_| ()) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let mut listeners: Vec<_> = kinds
        .into_iter()
        .zip(server.local_addrs().iter().copied())
        .collect();
    listeners.extend(server.metrics_addr().map(|addr| ("metrics", addr)));
    banner.log(&listeners);
    let loops = if threads > 1 {
        format!("{threads} loops, one a thread")
    } else {
        "one loop".to_owned()
    };
    match cluster {
        Some(url) => info!(
            "{loops}; node {} in the cluster at {}",
            server.node(),
            switchboard::redact_cluster_url(&url)
        ),
        None => info!("{loops}; node {}; no cluster", server.node()),
    }
    let handle = server.handle();
    if let Err(e) = handle_signals(handle, reload) {
        return fail(&format!("cannot install signal handlers: {e}"));
    }
    match server.run() {
        Ok(()) => {
            log::logger().flush();
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("poll loop failed: {e}")),
    }
}

/// Prints `msg` after the log lines queued before it (bounded wait).
fn fail(msg: &str) -> ExitCode {
    log::logger().flush();
    eprintln!("switchboard: {msg}");
    ExitCode::FAILURE
}

/// Reads `--config FILE`. An error is one line: the file, the line and
/// column, and TOML's (or serde's) own reason, e.g. `config file x.toml, line
/// 3, column 14: invalid type: string "ten", expected usize`.
fn load_file(path: &Path) -> Result<ServeArgs, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| config_error(path, &text, &e))
}

/// One line for a TOML or serde error in `text`, read from `path`.
fn config_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let reason = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let reason = if reason.is_empty() {
        "invalid TOML".to_owned()
    } else {
        reason
    };
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(
                "config file {}, line {line}, column {column}: {reason}",
                path.display()
            )
        }
        None => format!("config file {}: {reason}", path.display()),
    }
}

/// Installs the logger of [`switchboard::logging`]: lines are formatted on
/// the logging thread and written by a writer thread per sink (stderr, and
/// `--log-file` appended), so a sink that stops taking lines never blocks the
/// poll loop; they are dropped and counted instead.
fn init_logging(level: &str, file: Option<&Path>) -> Result<(), String> {
    let filter = match level.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        other => {
            return Err(format!(
                "--log-level: unknown level {other:?} (error, warn, info, debug, trace)"
            ));
        }
    };
    let mut logger = Logger::new(filter).filter_dependencies("switchboard");
    logger
        .add_stderr()
        .map_err(|e| format!("cannot start logging to stderr: {e}"))?;
    if let Some(path) = file {
        logger
            .add_file(path)
            .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
    }
    logger
        .install()
        .map_err(|e| format!("cannot start logging: {e}"))
}

/// What SIGHUP reloads.
#[derive(Debug, Default)]
struct Reload {
    /// The password file and the authenticator the password checks use.
    passwd: Option<(PathBuf, Arc<ReloadablePasswords>)>,
    /// The ACL file.
    acl: Option<PathBuf>,
}

/// A password file that SIGHUP can replace: the password-check threads read
/// the current one; the signal thread swaps it (the poll loop never touches
/// it).
#[derive(Debug)]
struct ReloadablePasswords(RwLock<Arc<PasswordFile>>);

impl ReloadablePasswords {
    fn current(&self) -> Arc<PasswordFile> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
    fn replace(&self, file: PasswordFile) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(file);
    }
}

impl Authenticator for ReloadablePasswords {
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.current().verify(user, password)
    }
}

/// Reads and parses an ACL file; errors are one line naming the file (and
/// the line).
fn load_acl(path: &Path) -> Result<Acl, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("ACL file {}: {e}", path.display()))?;
    Acl::parse(&text).map_err(|e| format!("ACL file {} {e}", path.display()))
}

fn build_config(args: &ServeArgs) -> Result<(ServerConfig, Reload, Banner), String> {
    let mut reload = Reload::default();
    let mut banner = Banner::default();
    let auth = match args.auth.as_deref().unwrap_or("none") {
        "none" => AuthMode::None,
        "password" => AuthMode::Password,
        "cert" => AuthMode::Cert,
        other => {
            return Err(format!(
                "--auth: expected none, password or cert, not {other:?}"
            ));
        }
    };
    // With --auth cert nobody can log in over plain TCP (no client
    // certificate there): that listener is on only when asked for.
    let listen = match (&args.listen, auth) {
        (None, AuthMode::Cert) => {
            info!(
                "--auth cert: no plain TCP listener, as a client certificate can only be \
                 given over TLS (--listen ADDR turns one on)"
            );
            None
        }
        (value, _) => parse_listen("--listen", value.as_deref().unwrap_or(DEFAULT_LISTEN))?,
    };
    if let (Some(addr), AuthMode::Cert) = (listen, auth) {
        warn!(
            "--auth cert: nobody can log in over the plain TCP listener {addr} \
             (no client certificate over plain TCP)"
        );
    }
    let mut config = ServerConfig {
        listen: listen.into_iter().collect(),
        metrics_listen: parse_listen(
            "--metrics-listen",
            args.metrics_listen.as_deref().unwrap_or("off"),
        )?,
        ..ServerConfig::default()
    };
    // Like plain TCP, plain WebSocket carries no client certificate.
    let ws_listen = match (&args.ws_listen, auth) {
        (None, AuthMode::Cert) => None,
        (value, _) => parse_listen("--ws-listen", value.as_deref().unwrap_or(DEFAULT_WS_LISTEN))?,
    };
    config.ws_listen.extend(ws_listen);
    let tls_listen = parse_listen(
        "--tls-listen",
        args.tls_listen.as_deref().unwrap_or(DEFAULT_TLS_LISTEN),
    )?;
    let wss_listen = parse_listen(
        "--wss-listen",
        args.wss_listen.as_deref().unwrap_or(DEFAULT_WSS_LISTEN),
    )?;
    let client_auth = match args.client_auth.as_deref() {
        None if auth == AuthMode::Cert => "required",
        None => "none",
        Some(mode @ ("none" | "optional" | "required")) => mode,
        Some(other) => {
            return Err(format!(
                "--client-auth: expected none, optional or required, not {other:?}"
            ));
        }
    };
    if auth == AuthMode::Cert
        && (tls_listen.is_none() && wss_listen.is_none() || client_auth == "none")
    {
        return Err(
            "--auth cert needs mutual TLS: a TLS listener, --client-ca FILE \
             and --client-auth optional or required"
                .into(),
        );
    }
    config.tls_listen.extend(tls_listen);
    config.wss_listen.extend(wss_listen);
    if tls_listen.is_some() || wss_listen.is_some() {
        let (tls, dev) = tls_settings(args, client_auth)?;
        config.tls = Some(tls);
        banner.dev_certs = dev;
        banner.client_auth = client_auth.to_owned();
    } else if args.cert.is_some()
        || args.key.is_some()
        || args.key_password_file.is_some()
        || args.client_ca.is_some()
    {
        warn!(
            "--tls-listen and --wss-listen are off: --cert, --key, --key-password-file and \
             --client-ca are not used"
        );
    }
    if config.listen.is_empty()
        && config.tls_listen.is_empty()
        && config.ws_listen.is_empty()
        && config.wss_listen.is_empty()
    {
        return Err(
            "every listener is off (--listen, --tls-listen, --ws-listen, --wss-listen): no \
             client could connect; turn one on"
                .into(),
        );
    }
    let b = &mut config.broker;
    b.auth = auth;
    if b.auth == AuthMode::Password {
        let Some(path) = &args.passwd else {
            return Err("--auth password needs --passwd FILE (make one with `switchboard passwd FILE USER`)".into());
        };
        let file = PasswordFile::load(path).map_err(|e| e.to_string())?;
        if file.is_empty() {
            warn!(
                "password file {} has no users: nobody can log in",
                path.display()
            );
        }
        let users = match file.len() {
            1 => "1 user".to_owned(),
            n => format!("{n} users"),
        };
        banner.auth = format!(
            "password ({users} in {}, reloaded on SIGHUP)",
            path.display()
        );
        let passwords = Arc::new(ReloadablePasswords(RwLock::new(Arc::new(file))));
        reload.passwd = Some((path.clone(), Arc::clone(&passwords)));
        config.authenticator = Some(passwords);
    } else if let Some(path) = &args.passwd {
        return Err(format!(
            "--passwd {} is only used with --auth password (add --auth password, or leave \
             --passwd out)",
            path.display()
        ));
    } else if b.auth == AuthMode::Cert {
        banner.auth = "cert (the user name is the client certificate's CN)".into();
    } else {
        banner.auth = "none (a user name alone logs in)".into();
    }
    if let Some(path) = &args.acl {
        let acl = load_acl(path)?;
        info!(
            "ACL file {}: rules for {} users and a default",
            path.display(),
            acl.user_count()
        );
        b.acl = Some(Arc::new(acl));
        reload.acl = Some(path.clone());
        banner.acl = Some(path.clone());
    }
    let mut registered: HashMap<u32, &str> = HashMap::new();
    for spec in &args.group {
        let (id, name) = spec
            .split_once('=')
            .ok_or_else(|| format!("--group {spec:?}: expected ID=NAME"))?;
        let id: u32 = id
            .trim()
            .parse()
            .ok()
            .filter(|&g| g != 0)
            .ok_or_else(|| format!("--group {spec:?}: group numbers are 1 to 4294967295"))?;
        if name.contains(['\n', '\r', ',']) {
            return Err(format!(
                "--group {spec:?}: a group name cannot hold a comma or line break"
            ));
        }
        if let Some(first) = registered.insert(id, name) {
            return Err(format!(
                "--group {spec:?}: group {id} is already registered (as {first:?}); \
                 each group number once"
            ));
        }
        config.groups.push((id, name.to_owned()));
    }
    banner.groups = config.groups.clone();
    banner.open_groups = args.open_groups;
    b.open_groups = args.open_groups;
    if let Some(n) = args.max_connections {
        b.max_connections = n;
    }
    if let Some(n) = args.max_payload {
        b.max_payload = n;
    }
    if let Some(n) = args.max_pending {
        b.max_pending = n;
    }
    if let Some(s) = args.login_timeout {
        b.login_timeout = seconds("--login-timeout", s)?;
    }
    if let Some(s) = args.ping_interval {
        b.ping_interval = seconds("--ping-interval", s)?;
    }
    if let Some(s) = args.ping_timeout {
        b.ping_timeout = seconds("--ping-timeout", s)?;
    }
    if let Some(s) = args.probe_interval {
        b.probe_interval = seconds("--probe-interval", s)?;
    }
    if let Some(s) = args.drain_timeout {
        b.drain_timeout = seconds("--drain-timeout", s)?;
    }
    if let Some(n) = args.max_subscriptions {
        b.max_subscriptions = n;
    }
    if let Some(n) = args.max_sessions_per_user {
        b.max_sessions_per_user = n;
    }
    if let Some(n) = args.max_open_groups {
        b.max_open_groups = n;
    }
    match args.threads {
        None => {}
        Some(n @ 1..=64) => config.threads = n,
        Some(n) => return Err(format!("--threads: expected 1 to 64, not {n}")),
    }
    config.cluster = match args.cluster.as_deref() {
        None | Some("off") => None,
        Some(url) => {
            switchboard::check_cluster_url(url)?;
            Some(url.to_owned())
        }
    };
    config.cluster_tls = match (&args.cluster_ca, &args.cluster_cert, &args.cluster_key) {
        (None, None, None) => None,
        (None, _, _) => return Err("--cluster-cert and --cluster-key need --cluster-ca".into()),
        (Some(_), Some(_), None) | (Some(_), None, Some(_)) => {
            return Err("--cluster-cert and --cluster-key go together".into());
        }
        (Some(ca), cert, key) => {
            let tls = switchboard::client::ClientTls::from_ca_file(ca)
                .map_err(|e| format!("--cluster-ca: {e}"))?;
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => tls
                    .with_client_cert(cert, key)
                    .map_err(|e| format!("--cluster-cert/--cluster-key: {e}"))?,
                _ => tls,
            };
            let config =
                (tls.rustls_config()).map_err(|e| format!("--cluster-cert/--cluster-key: {e}"))?;
            Some(config)
        }
    };
    let rediss = (config.cluster.as_deref()).is_some_and(|u| u.starts_with("rediss://"));
    if rediss && config.cluster_tls.is_none() {
        return Err("--cluster rediss://...: needs --cluster-ca FILE (the CA Redis's certificate chains to)".into());
    }
    config.broker.node = match &args.node {
        Some(name) if is_node_name(name) => name.clone(),
        Some(name) => {
            return Err(format!(
                "--node: {name:?} is not a node name (1 to 64 of A-Z a-z 0-9 . _ - :)"
            ));
        }
        // Named by the server once its listener is bound (host:port).
        None => String::new(),
    };
    Ok((config, reload, banner))
}

/// A node name: what a member name may be on the engine's channels.
fn is_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
}

/// What the start banner says besides the listeners: logged by
/// [`Banner::log`] once every listener is bound.
#[derive(Debug, Default)]
struct Banner {
    /// The auth mode and what it uses.
    auth: String,
    /// The ACL file, if any.
    acl: Option<PathBuf>,
    /// `--client-auth` on the TLS listeners.
    client_auth: String,
    /// The groups registered at start.
    groups: Vec<(u32, String)>,
    /// `--open-groups`.
    open_groups: bool,
    /// The development certificates, when the TLS listener uses them.
    dev_certs: Option<DevCerts>,
}

impl Banner {
    /// Groups named in the banner; the rest are counted.
    const MAX_GROUPS: usize = 20;

    /// The start banner, a few info lines: version and pid with every
    /// listener (transport and address), then auth, ACL and groups, then
    /// where the development certificates are (when they are used).
    fn log(&self, listeners: &[(&str, SocketAddr)]) {
        let tls_note = match self.client_auth.as_str() {
            "optional" => " (client certificates optional)",
            "required" => " (client certificates required)",
            _ => "",
        };
        let listeners = listeners
            .iter()
            .map(|(kind, addr)| {
                let note = if matches!(*kind, "tls" | "wss") {
                    tls_note
                } else {
                    ""
                };
                format!("{kind} {addr}{note}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        info!(
            "switchboard {} started, pid {}; listeners: {listeners}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        let acl = match &self.acl {
            Some(path) => format!("{} (reloaded on SIGHUP)", path.display()),
            None => "none (every logged-in user may do everything)".into(),
        };
        let mut groups = self
            .groups
            .iter()
            .take(Self::MAX_GROUPS)
            .map(|(id, name)| format!("{id}={name}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.groups.is_empty() {
            groups = "none registered".into();
        } else if self.groups.len() > Self::MAX_GROUPS {
            groups += &format!(" and {} more", self.groups.len() - Self::MAX_GROUPS);
        }
        let open = if self.open_groups { "on" } else { "off" };
        info!(
            "auth {}; ACL {acl}; groups: {groups}; open groups {open}",
            self.auth
        );
        if let Some(dev) = &self.dev_certs {
            let dir = dev.ca_cert.parent().unwrap_or(Path::new("."));
            let shown = match std::path::absolute(dir) {
                Ok(abs) if abs != dir => format!("{} ({})", dir.display(), abs.display()),
                _ => dir.display().to_string(),
            };
            info!(
                "TLS: development certificates in {shown}, for development only (use \
                 --cert and --key in production); clients should trust {}",
                dev.ca_cert.display()
            );
        }
    }
}

/// The TLS settings: `--cert`/`--key`, or development certificates made (or
/// reused) in `./certs/` (or the per-user data directory when `./certs`
/// cannot be written); client certificates per `--client-auth`. Also returns
/// the development certificates, when they are the ones used.
fn tls_settings(
    args: &ServeArgs,
    client_auth: &str,
) -> Result<(Arc<rustls::ServerConfig>, Option<DevCerts>), String> {
    let (cert_path, key_path, password, dev) = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), key_password(args, k)?, None),
        (None, None) => {
            let local = DevCerts::in_dir(Path::new("certs"));
            let password = key_password(args, &local.server_key)?;
            let dev = dev_certs(password.as_deref())?;
            let (cert, key) = (dev.server_cert.clone(), dev.server_key.clone());
            (cert, key, password, Some(dev))
        }
        (Some(_), None) => return Err("--cert needs --key (the certificate's private key)".into()),
        (None, Some(_)) => return Err("--key needs --cert (the certificate chain)".into()),
    };
    let chain = certs::load_certs(&cert_path).map_err(|e| e.to_string())?;
    let key =
        certs::load_key_with_password(&key_path, password.as_deref()).map_err(|e| e.to_string())?;
    if let Some(file) = &args.key_password_file {
        if !certs::is_encrypted_key(&key_path).map_err(|e| e.to_string())? {
            warn!(
                "--key-password-file {} is not used: key file {} is not encrypted",
                file.display(),
                key_path.display()
            );
        }
    }
    certs::check_key_matches(&chain, &key, &cert_path, &key_path).map_err(|e| e.to_string())?;
    let client = match client_auth {
        "none" => {
            if let Some(ca) = &args.client_ca {
                // Checked anyway, so a bad file is reported now, not when
                // client certificates are switched on.
                certs::load_roots(ca).map_err(|e| e.to_string())?;
                warn!(
                    "--client-ca {} is not used with --client-auth none",
                    ca.display()
                );
            }
            ClientAuth::None
        }
        mode => {
            let Some(ca) = &args.client_ca else {
                return Err(format!(
                    "--client-auth {mode} needs --client-ca FILE (the CA client certificates chain to)"
                ));
            };
            let roots = Arc::new(certs::load_roots(ca).map_err(|e| e.to_string())?);
            if mode == "required" {
                ClientAuth::Required(roots)
            } else {
                ClientAuth::Optional(roots)
            }
        }
    };
    let tls = tls::server_config(chain, key, &client)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    Ok((tls, dev))
}

/// The password for `key` if it is encrypted: the first line of
/// `--key-password-file`, or else typed at a prompt when standard input is a
/// terminal. `None` otherwise (an encrypted key is then a start error).
fn key_password(args: &ServeArgs, key: &Path) -> Result<Option<Vec<u8>>, String> {
    if let Some(file) = &args.key_password_file {
        return certs::read_password_file(file)
            .map(Some)
            .map_err(|e| format!("--key-password-file: {e}"));
    }
    // A missing or unreadable key is reported when it is loaded.
    if !std::io::stdin().is_terminal() || !certs::is_encrypted_key(key).unwrap_or(false) {
        return Ok(None);
    }
    log::logger().flush();
    let prompt = format!("Password for key file {}: ", key.display());
    match rpassword::prompt_password(prompt) {
        Ok(password) if !password.is_empty() => Ok(Some(password.into_bytes())),
        Ok(_) => Err(format!(
            "key file {}: no password typed (it is encrypted)",
            key.display()
        )),
        Err(e) => Err(format!(
            "key file {}: cannot read its password from the terminal: {e}",
            key.display()
        )),
    }
}

/// The development certificates: in `./certs`, or, when that cannot be
/// written, in the per-user data directory ([`certs::user_certs_dir`]).
fn dev_certs(password: Option<&[u8]>) -> Result<DevCerts, String> {
    let local = Path::new("certs");
    let (path, source) = match certs::ensure_dev_certs_with_password(local, password) {
        Ok(dev) => return Ok(dev),
        Err(CertError::Write { path, source }) => (path, source),
        Err(e) => return Err(e.to_string()),
    };
    let Some(dir) = certs::user_certs_dir() else {
        return Err(format!(
            "cannot write development certificates to {}: {source} (and neither HOME nor \
             XDG_DATA_HOME names a per-user directory); give --cert and --key",
            path.display()
        ));
    };
    warn!(
        "cannot write development certificates to {} ({source}); using {} instead",
        path.display(),
        dir.display()
    );
    certs::ensure_dev_certs_with_password(&dir, password).map_err(|e| e.to_string())
}

/// `off`, or an address (host names resolved; the first address is used).
fn parse_listen(flag: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .to_socket_addrs()
        .map_err(|e| format!("{flag} {value}: {e}"))?
        .next()
        .map(Some)
        .ok_or_else(|| format!("{flag} {value}: no address"))
}

fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "{flag}: expected a positive number of seconds, not {s}"
        ))
    }
}

/// SIGINT and SIGTERM stop the server gracefully; a second one exits at
/// once. SIGHUP reloads the password and ACL files (on this signal thread: the
/// files are read and parsed here, and the new ACL reaches the loop as a
/// message) and reopens the log file.
fn handle_signals(handle: ServerHandle, reload: Reload) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("switchboard-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload_files(&handle, &reload);
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    eprintln!("switchboard: second signal {sig}, exiting now");
                    std::process::exit(1);
                }
                info!("signal {sig}: shutting down");
                handle.stop();
            }
        })?;
    Ok(())
}

/// SIGHUP: each file is read and checked in full; a bad one is refused with
/// a log line and the one in force is kept. No session is dropped.
fn reload_files(handle: &ServerHandle, reload: &Reload) {
    // First, so that what follows goes to the new log file.
    switchboard::logging::reopen_files();
    info!("SIGHUP: reloading");
    if let Some((path, passwords)) = &reload.passwd {
        match PasswordFile::load(path) {
            Ok(file) => {
                info!(
                    "SIGHUP: password file {} reloaded ({} users)",
                    path.display(),
                    file.len()
                );
                passwords.replace(file);
            }
            Err(e) => warn!("SIGHUP: {e}; keeping the password file loaded before"),
        }
    }
    if let Some(path) = &reload.acl {
        match load_acl(path) {
            Ok(acl) => {
                let acl = Arc::new(acl);
                let users = acl.user_count();
                let shown = path.display().to_string();
                let first = std::sync::atomic::AtomicBool::new(true);
                let sent = handle.call_each(move |ctx| {
                    ctx.set_acl(Some(Arc::clone(&acl)));
                    if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        info!(
                            "SIGHUP: ACL file {shown} reloaded (rules for {users} users and a default)"
                        );
                    }
                });
                if sent.is_err() {
                    warn!("SIGHUP: the server is stopping; ACL not reloaded");
                }
            }
            Err(e) => warn!("SIGHUP: {e}; keeping the ACL loaded before"),
        }
    }
}
