//! `hub`: run the webhook hub locally and work with mapping files and events.

use anyhow::Result;
use clap::{Parser, Subcommand};
use hub_cli::{mappings_cmd, serve, store_cmd, verify_cmd};
use hub_http::server::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hub", version, about = "Webhook integration hub")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive webhooks and deliver them (ingest + worker in one process, embedded store).
    Serve {
        /// Public listener: `/hooks/...` and `/healthz` only.
        #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener (events, replay), loopback only, bearer token required.
        #[arg(long, env = "HUB_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// Time a client gets to send a request head (e.g. 10s); then it is disconnected.
        #[arg(long, env = "HUB_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
        header_timeout: Duration,
        /// Time a client gets to send a request body after its head; then 408 request_timeout.
        #[arg(long, env = "HUB_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
        body_timeout: Duration,
        /// Open connections per listener at most; more wait until one closes.
        #[arg(long, env = "HUB_MAX_CONNECTIONS", default_value_t = 1024)]
        max_connections: usize,
        /// Requests handled at once per listener at most; more get 503 overloaded.
        #[arg(long, env = "HUB_MAX_IN_FLIGHT", default_value_t = 256)]
        max_in_flight: usize,
        #[arg(long, env = "HUB_STORE", default_value = "hub.redb")]
        store: PathBuf,
        #[arg(long, env = "HUB_MAPPINGS", default_value = "mappings")]
        mappings: PathBuf,
        /// A private/loopback network that routes may reach with `to.allow_net` (repeatable), e.g.
        /// 10.0.0.0/8; a route asking for one outside these fails the start.
        #[arg(long = "allow-net", env = "HUB_ALLOW_NETS", value_delimiter = ',')]
        allow_nets: Vec<ipnet::IpNet>,
        /// Reverse proxies in front of the hub (repeatable CIDR, e.g. 127.0.0.1/32): for a connection
        /// from one of them, the client address (`ip_allow`, stored `remote_addr`) is taken from
        /// `X-Forwarded-For`. Without it that header is ignored.
        #[arg(long = "trusted-proxy", env = "HUB_TRUSTED_PROXIES", value_delimiter = ',')]
        trusted_proxies: Vec<ipnet::IpNet>,
        /// Deliveries in flight at once.
        #[arg(long, env = "HUB_CONCURRENCY", default_value_t = 32)]
        concurrency: usize,
        /// Local tour mode: secret references that are not set resolve to the placeholder
        /// `<env:NAME>` (with a warning) instead of failing the start. Never in production.
        #[arg(long)]
        dev: bool,
        /// With --dev: where the catcher listens that prints every request it receives (the
        /// tour mapping delivers to 127.0.0.1:8090).
        #[arg(long, env = "HUB_CATCHER_LISTEN", default_value = "127.0.0.1:8090")]
        catcher_listen: SocketAddr,
    },
    /// Check, test and dry-run mapping files.
    Mappings {
        #[command(subcommand)]
        cmd: MappingsCmd,
    },
    /// Inspect stored events.
    Events {
        #[command(subcommand)]
        cmd: EventsCmd,
    },
    /// Check a request's signature with a provider's scheme (the server's code path).
    Verify {
        /// Provider preset: stripe, github, svix, twilio, ...
        #[arg(long)]
        provider: String,
        /// Name of an environment variable holding the secret or key (repeatable: any may
        /// match, as during a rotation).
        #[arg(long = "secret-env", value_name = "NAME")]
        secret_envs: Vec<String>,
        /// The secret or key itself (repeatable). It lands in shell history and the process
        /// list: prefer --secret-env.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// Request header, 'Name: value' (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long)]
        body_file: PathBuf,
        /// The URL the sender called (Twilio, Square, HubSpot, Mandrill sign it).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "POST")]
        method: String,
        /// Verifier clock, unix seconds (default: now).
        #[arg(long)]
        now: Option<u64>,
        /// Timestamp tolerance in seconds, or `none` (default: the provider's).
        #[arg(long)]
        tolerance: Option<String>,
    },
    /// Inspect what the hub remembers of an entity (a contact, a deal).
    State {
        #[command(subcommand)]
        cmd: StateCmd,
    },
    /// Dispatch a stored event again with the current mappings.
    Replay {
        event_id: String,
        #[arg(long, env = "HUB_STORE", default_value = "hub.redb")]
        store: PathBuf,
        /// The admin URL of a running `hub serve` (default: the address it recorded next to the store).
        #[arg(long, env = "HUB_SERVER")]
        server: Option<String>,
    },
}

#[derive(Subcommand)]
enum MappingsCmd {
    /// Compile every mapping file; print `file:line:col: reason` for each problem.
    Validate {
        #[arg(default_value = "mappings")]
        dir: PathBuf,
        /// Also fail when a referenced secret is not set in the environment.
        #[arg(long)]
        require_secrets: bool,
    },
    /// Run every golden example (`examples/*.yaml` beside each mapping file).
    Test {
        #[arg(default_value = "mappings")]
        dir: PathBuf,
    },
    /// Compile every mapping file and store the set as a new version: for the AWS functions
    /// (`--store dynamodb`), or a running `hub serve` (`--store local`), in force at once.
    Push {
        #[arg(default_value = "mappings")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "dynamodb")]
        store: mappings_cmd::PushStore,
        /// The hub's DynamoDB table (the stack's `TableName` output), for `--store dynamodb`.
        #[arg(long, env = "HUB_TABLE", required_if_eq("store", "dynamodb"))]
        table: Option<String>,
        /// The running `hub serve`'s store file, next to which its admin address and token are,
        /// for `--store local`.
        #[arg(long, env = "HUB_STORE", default_value = "hub.redb")]
        hub_store: PathBuf,
        /// The admin listener's URL, when it is not the one recorded next to the store.
        #[arg(long)]
        server: Option<String>,
        /// The deployment's `RetentionDays` (0: events never expire): a set whose routes retry
        /// longer than events are kept (with the dead-letter queue's 14 days) is refused.
        #[arg(long, env = "HUB_RETENTION_DAYS", default_value_t = 30)]
        retention_days: u64,
    },
    /// Print what a mapping would send for an input body, without sending.
    Render {
        file: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Request header, 'Name: value' (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Check the signature too (needs the signature header and the secret in the environment).
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand)]
enum StateCmd {
    /// Fields, scores with their ledger, counters, journeys and each route's trigger state.
    Show {
        /// The entity (`contact`), as its entity file names it.
        entity: String,
        /// Its key (`ann@example.com`), as the facts' key template makes it.
        key: String,
        #[arg(long, env = "HUB_STORE", default_value = "hub.redb")]
        store: PathBuf,
        /// The admin URL of a running `hub serve` (default: the address it recorded next to the store).
        #[arg(long, env = "HUB_SERVER")]
        server: Option<String>,
        /// The mapping files that declare the entity (used when the store is read directly).
        #[arg(long, env = "HUB_MAPPINGS", default_value = "mappings")]
        mappings: PathBuf,
    },
}

#[derive(Subcommand)]
enum EventsCmd {
    /// Newest events first, with status, attempts and last error.
    List {
        #[arg(long, env = "HUB_STORE", default_value = "hub.redb")]
        store: PathBuf,
        /// The admin URL of a running `hub serve` (default: the address it recorded next to the store).
        #[arg(long, env = "HUB_SERVER")]
        server: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// received, filtered, pending, retrying, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One event with its deliveries (and body with --body).
    Show {
        event_id: String,
        #[arg(long, env = "HUB_STORE", default_value = "hub.redb")]
        store: PathBuf,
        /// The admin URL of a running `hub serve` (default: the address it recorded next to the store).
        #[arg(long, env = "HUB_SERVER")]
        server: Option<String>,
        #[arg(long)]
        body: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli) -> Result<bool> {
    let mut out = std::io::stdout();
    match cli.cmd {
        Cmd::Serve {
            listen,
            admin_listen,
            header_timeout,
            body_timeout,
            max_connections,
            max_in_flight,
            store,
            mappings,
            allow_nets,
            trusted_proxies,
            concurrency,
            dev,
            catcher_listen,
        } => {
            init_tracing();
            let admin_token =
                hub_cli::admin_access::env_token(std::env::var("HUB_ADMIN_TOKEN").ok().as_deref())?;
            let limits = Limits { header_timeout, body_timeout, max_connections, max_in_flight };
            let cfg = serve::ServeConfig {
                listen,
                admin_listen,
                admin_token,
                limits,
                catcher_listen,
                store,
                mappings,
                allow_nets,
                trusted_proxies,
                concurrency,
                dev,
            };
            runtime()?.block_on(serve::serve(cfg))?;
            Ok(true)
        }
        Cmd::Mappings { cmd } => match cmd {
            MappingsCmd::Validate { dir, require_secrets } => {
                mappings_cmd::validate(&dir, require_secrets, &mut out)
            }
            MappingsCmd::Test { dir } => Ok(mappings_cmd::test(&dir, &mut out)?.failed == 0),
            MappingsCmd::Push { dir, store, table, hub_store, server, retention_days } => {
                let retention = (retention_days > 0).then(|| Duration::from_secs(retention_days * 86_400));
                let target = match store {
                    mappings_cmd::PushStore::Dynamodb => {
                        mappings_cmd::PushTarget::Dynamodb { table: table.as_deref().unwrap_or_default() }
                    }
                    mappings_cmd::PushStore::Local => {
                        mappings_cmd::PushTarget::Local { store: &hub_store, server: server.as_deref() }
                    }
                };
                runtime()?.block_on(mappings_cmd::push(&dir, target, retention, &mut out))
            }
            MappingsCmd::Render { file, input, headers, verify } => {
                mappings_cmd::render(&file, &input, &headers, verify, &mut out)
            }
        },
        Cmd::Events { cmd } => {
            let rt = runtime()?;
            match cmd {
                EventsCmd::List { store, server, source, status, limit, json } => {
                    let args = store_cmd::ListArgs { source, status, limit, json };
                    rt.block_on(store_cmd::list(&store, server.as_deref(), args, &mut out))?
                }
                EventsCmd::Show { event_id, store, server, body } => {
                    rt.block_on(store_cmd::show(&store, server.as_deref(), &event_id, body, &mut out))?
                }
            }
            Ok(true)
        }
        Cmd::Verify { provider, secret_envs, secrets, headers, body_file, url, method, now, tolerance } => {
            if !secrets.is_empty() {
                eprintln!(
                    "warning: --secret puts the secret in shell history and the process list; \
                     prefer --secret-env NAME"
                );
            }
            let args = verify_cmd::VerifyArgs {
                provider,
                secret_envs,
                secrets,
                headers,
                body_file,
                url,
                method,
                now,
                tolerance,
            };
            verify_cmd::run(&args, &mut out)
        }
        Cmd::State { cmd: StateCmd::Show { entity, key, store, server, mappings } } => {
            runtime()?.block_on(store_cmd::state_show(
                &store,
                server.as_deref(),
                &mappings,
                &entity,
                &key,
                &mut out,
            ))?;
            Ok(true)
        }
        Cmd::Replay { event_id, store, server } => {
            runtime()?.block_on(store_cmd::replay(&store, server.as_deref(), &event_id, &mut out))?;
            Ok(true)
        }
    }
}
