//! The `lightcone` CLI's client side: the commands that talk to a running server, following the
//! official `spacetime` CLI's names, flags and output (SPEC §9), and `start`'s options.
//!
//! Owns: argument definitions ([`Command`], [`StartArgs`]), server resolution and the config
//! file ([`config`], [`client`]), and each command's request and rendering. Does not own: the
//! server (`crate::server`), `replay`.

pub mod args;
pub mod client;
pub mod config;
pub mod error;
pub mod logs;
pub mod publish;
pub mod schema;
pub mod sql;
pub mod subscribe;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

pub use client::{Client, DEFAULT_SERVER_URL};
pub use config::Config;
pub use error::CliError;

use client::{encode_segment, identity_of_token, resolve_server, Payload};
use config::ServerEntry;
use schema::fetch_schema;

/// Options every client command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// The server: a nickname, a URL, or host:port [default: http://127.0.0.1:3000].
    #[arg(short = 's', long = "server", value_name = "SERVER")]
    pub server: Option<String>,
    /// Send no token: the server treats the request as a new anonymous identity.
    #[arg(long)]
    pub anonymous: bool,
    /// Assume "yes" for every confirmation prompt.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
}

/// How `lightcone start` makes commits durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// A reply is sent once its transaction is fsync'd.
    Fsync,
    /// Reply at once; the log is written in the background.
    None,
}

/// `lightcone start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Where databases live [default: $XDG_DATA_HOME/lightcone or ~/.local/share/lightcone].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address to listen on.
    #[arg(short = 'l', long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    pub listen_addr: SocketAddr,
    /// When a committed transaction is acknowledged.
    #[arg(long, value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,
}

/// Output format of `logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The client commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Build a module (or take a .wasm) and publish it to a database, creating or updating it.
    Publish {
        /// The database name (omit to create a database known only by its identity).
        name: Option<String>,
        /// The module's cargo project.
        #[arg(short = 'p', long = "project-path", value_name = "DIR", default_value = ".")]
        project_path: PathBuf,
        /// A built module to publish instead of building one.
        #[arg(short = 'b', long = "bin-path", value_name = "FILE.wasm", conflicts_with = "build_options")]
        bin_path: Option<PathBuf>,
        /// Delete the database's data before publishing (asks first unless -y).
        #[arg(short = 'c', long = "delete-data")]
        delete_data: bool,
        /// Allow an update that disconnects every client (skips that question; -y does too).
        #[arg(long = "break-clients")]
        break_clients: bool,
        /// Extra options for `cargo build` (one string, split on whitespace).
        #[arg(long = "build-options", value_name = "OPTIONS", allow_hyphen_values = true)]
        build_options: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Call a reducer. Each argument is one JSON value (a word that is not JSON is a string);
    /// a single JSON array is the whole argument list.
    Call {
        /// The database name or identity.
        database: String,
        /// The reducer (or procedure).
        reducer: String,
        /// The arguments.
        #[arg(allow_negative_numbers = true)]
        arguments: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a SQL query (or several, separated by `;`) and print the results as tables.
    Sql {
        database: String,
        query: String,
        /// Print the server's JSON answer as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a database's module logs.
    Logs {
        database: String,
        /// How many of the latest lines to print [default: all; 10 with --follow].
        #[arg(short = 'n', long = "num-lines", value_name = "N")]
        num_lines: Option<u32>,
        /// Keep printing new lines as they are logged.
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: LogFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Subscribe to SQL queries and print each update as a JSON line.
    Subscribe {
        database: String,
        /// The queries.
        #[arg(required = true)]
        queries: Vec<String>,
        /// Exit after this many transaction updates (the initial one not counted).
        #[arg(short = 'n', long = "num-updates", value_name = "N")]
        num_updates: Option<u32>,
        /// Exit after this many seconds.
        #[arg(short = 't', long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Print the initial rows too.
        #[arg(long)]
        print_initial_update: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Describe a database's tables and reducers.
    Describe {
        database: String,
        /// `table` or `reducer`, with `entity_name`: describe only that one.
        entity_type: Option<String>,
        entity_name: Option<String>,
        /// Print the schema as JSON (SATS-JSON of the module definition).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a database and all its data.
    Delete {
        database: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the databases owned by your identity.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print your identity on a server (obtaining one if you have none).
    Identity {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Log in: get a new identity issued by a server (or store a token you have).
    Login {
        /// The server to get an identity from.
        #[arg(long = "server-issued-login", value_name = "SERVER")]
        server_issued_login: Option<String>,
        /// Store this token instead.
        #[arg(long, value_name = "JWT", conflicts_with = "server_issued_login")]
        token: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Forget the stored token of a server (-s), or all of them.
    Logout {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage server nicknames.
    #[command(subcommand)]
    Server(ServerCommand),
}

/// `lightcone server …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ServerCommand {
    /// Add a server under a nickname.
    Add {
        /// Its URL (or host:port).
        url: String,
        /// The nickname.
        #[arg(long = "name", short = 'n')]
        name: String,
        /// Make it the default server.
        #[arg(short = 'd', long)]
        default: bool,
    },
    /// List the servers.
    List,
    /// Make a server the default.
    SetDefault { server: String },
    /// Remove a server nickname (and its token).
    Remove { server: String },
    /// Check that a server answers.
    Ping { server: Option<String> },
}

/// The config file and what a command needs from it.
pub struct Session {
    pub config_path: PathBuf,
    pub config: Config,
}

impl Session {
    pub fn load() -> Result<Session, CliError> {
        let config_path = config::config_path();
        let config = Config::load(&config_path)?;
        Ok(Session { config_path, config })
    }

    fn save(&self) -> Result<(), CliError> {
        self.config.save(&self.config_path)
    }

    /// A client for `args`: with the stored token, obtaining (and storing) a server-issued
    /// identity if there is none; without any token under `--anonymous`.
    pub fn client(&mut self, args: &ServerArgs) -> Result<Client, CliError> {
        let server = resolve_server(args.server.as_deref(), &self.config)?;
        if args.anonymous {
            return Ok(Client::new(server, None));
        }
        if let Some(t) = self.config.token(&server) {
            return Ok(Client::new(server, Some(t.to_owned())));
        }
        let mut client = Client::new(server.clone(), None);
        let (identity, token) = new_identity(&client)?;
        self.config.tokens.insert(server.clone(), token.clone());
        self.save()?;
        eprintln!("Logged in to {server} with a new server-issued identity {identity}.");
        client.set_token(Some(token));
        Ok(client)
    }
}

/// `POST /v1/identity` → (identity hex, token).
pub fn new_identity(client: &Client) -> Result<(String, String), CliError> {
    let answer = client.json("POST", "/identity", None)?;
    let token = answer
        .get("token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| CliError::BadResponse("POST /v1/identity: no `token`".into()))?
        .to_owned();
    let identity = answer
        .get("identity")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .or_else(|| identity_of_token(&token))
        .unwrap_or_else(|| "?".into());
    Ok((identity, token))
}

fn confirm(question: &str, yes: bool) -> Result<bool, CliError> {
    if yes {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => Ok(false),
        Ok(_) => Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")),
    }
}

/// The pre-publish check of an update (as the `spacetime` CLI makes it): prints the plan, asks
/// before an update that disconnects every client, and refuses one that cannot keep the
/// data. Returns the query that publishes the update as planned ("" for a new database).
fn check_update(
    client: &client::Client,
    name: &str,
    wasm: &[u8],
    break_clients: bool,
) -> Result<String, CliError> {
    eprintln!("Checking for breaking changes …");
    let answer = match client.json(
        "POST",
        &format!("{}/pre_publish", db_path(name)),
        Some(Payload::wasm(wasm.to_vec())),
    ) {
        Ok(answer) => answer,
        Err(CliError::Http { status: 404, .. }) => return Ok(String::new()), // a new database
        Err(e) => return Err(e),
    };
    if let Some(manual) = answer.get("ManualMigrate") {
        let reason = manual.get("reason").and_then(|r| r.as_str()).unwrap_or("(no reason given)");
        return Err(CliError::Aborted(format!(
            "aborted: this update cannot keep the data of `{name}`: {reason}\n\
             Publish with --delete-data to replace the database instead."
        )));
    }
    let auto = answer
        .get("AutoMigrate")
        .ok_or_else(|| CliError::BadResponse(format!("unexpected pre-publish answer: {answer}")))?;
    if let Some(plan) = auto.get("migrate_plan").and_then(|p| p.as_str()) {
        eprint!("{plan}");
    }
    if auto.get("break_clients").and_then(|b| b.as_bool()) != Some(true) {
        return Ok(String::new());
    }
    if !confirm("The above changes will BREAK existing clients. Do you want to proceed?", break_clients)? {
        return Err(CliError::Aborted(
            "aborted: nothing was published (pass --break-clients or -y to allow it)".into(),
        ));
    }
    let token = auto
        .get("token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| CliError::BadResponse("the pre-publish answer has no migration token".into()))?;
    Ok(format!("?policy=BreakClients&token={}", encode_segment(token)))
}

fn db_path(db: &str) -> String {
    format!("/database/{}", encode_segment(db))
}

fn stdout_write(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(|e| CliError::Aborted(e.to_string()))
}

/// Runs one client command.
pub fn run(command: Command) -> Result<(), CliError> {
    run_command(command).map_err(|e| match e {
        CliError::Http { status: 401, body } => CliError::Http {
            status: 401,
            body: format!(
                "{}\n  the server refused the stored token (a new data directory?): \
                 `lightcone logout -s <server>` forgets it, or pass --anonymous",
                if body.trim().is_empty() { "unauthorized" } else { body.trim() }
            ),
        },
        other => other,
    })
}

fn run_command(command: Command) -> Result<(), CliError> {
    let mut session = Session::load()?;
    match command {
        Command::Publish {
            name,
            project_path,
            bin_path,
            delete_data,
            break_clients,
            build_options,
            server,
        } => {
            let wasm_path = match bin_path {
                Some(p) if p.is_file() && !looks_like_wasm(&p) => {
                    return Err(CliError::InvalidArgument(format!("{} is not a wasm module", p.display())))
                }
                Some(p) => p,
                None => {
                    let opts: Vec<String> = build_options
                        .as_deref()
                        .unwrap_or("")
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect();
                    publish::build_module(&project_path, &opts)?
                }
            };
            let wasm = std::fs::read(&wasm_path)
                .map_err(|source| CliError::File { path: wasm_path.clone(), source })?;
            if delete_data {
                let what = name.as_deref().unwrap_or("the database");
                if !confirm(&format!("This will DELETE all data of `{what}`. Continue?"), server.yes)? {
                    return Err(CliError::Aborted(
                        "aborted: nothing was published (pass -y to confirm)".into(),
                    ));
                }
            }
            let client = session.client(&server)?;
            eprintln!(
                "Publishing module {} ({} bytes) to {} …",
                wasm_path.display(),
                wasm.len(),
                client.server()
            );
            let answer = match &name {
                Some(n) => {
                    let query = if delete_data {
                        "?clear=true".to_string()
                    } else {
                        check_update(&client, n, &wasm, break_clients || server.yes)?
                    };
                    client.json("PUT", &format!("{}{query}", db_path(n)), Some(Payload::wasm(wasm)))?
                }
                None => client.json("POST", "/database", Some(Payload::wasm(wasm)))?,
            };
            println!("{}", publish::publish_message(&answer, name.as_deref())?);
            Ok(())
        }
        Command::Call { database, reducer, arguments, server } => {
            let client = session.client(&server)?;
            let schema = fetch_schema(&client, &database).ok().map(|(_, s)| s);
            let reducer_def = schema.as_ref().and_then(|s| s.function(&reducer));
            let shapes = match (&schema, reducer_def) {
                (Some(s), Some(r)) => Some(args::param_shapes(&r.params, &s.typespace)),
                _ => None,
            };
            let body = args::build_call_args(&arguments, shapes.as_deref());
            let path = format!("{}/call/{}", db_path(&database), encode_segment(&reducer));
            match client.text("POST", &path, Some(Payload::json(body))) {
                Ok(text) => {
                    if !text.trim().is_empty() {
                        println!("{}", text.trim_end());
                    }
                    Ok(())
                }
                Err(CliError::Http { status, body }) => {
                    let mut message = if body.trim().is_empty() {
                        CliError::Http { status, body: String::new() }.to_string()
                    } else {
                        body.trim().to_owned()
                    };
                    if let Some(s) = &schema {
                        match s.function(&reducer) {
                            Some(r) if message.to_ascii_lowercase().contains("invalid arguments") => {
                                message.push_str(&format!(
                                    "\n  `{}` takes ({})",
                                    r.name,
                                    schema::params_list(&r.params, s)
                                ));
                            }
                            None if status == 404 => {
                                let names = |fs: &[schema::ReducerInfo]| -> String {
                                    let callable: Vec<&str> =
                                        fs.iter().filter(|r| r.callable).map(|r| r.name.as_str()).collect();
                                    callable.join(", ")
                                };
                                message.push_str(&format!(
                                    "\n  the reducers of `{database}` are: {}",
                                    names(&s.reducers)
                                ));
                                if s.procedures.iter().any(|p| p.callable) {
                                    message
                                        .push_str(&format!("\n  its procedures: {}", names(&s.procedures)));
                                }
                            }
                            _ => {}
                        }
                    }
                    Err(CliError::Http { status, body: message })
                }
                Err(e) => Err(e),
            }
        }
        Command::Sql { database, query, json, server } => {
            let client = session.client(&server)?;
            let text =
                client.text("POST", &format!("{}/sql", db_path(&database)), Some(Payload::text(query)))?;
            if json {
                println!("{}", text.trim_end());
                return Ok(());
            }
            let stmts = sql::parse_sql_response(&text)?;
            println!("{}", sql::render_sql_response(&stmts));
            Ok(())
        }
        Command::Logs { database, num_lines, follow, format, server } => {
            let client = session.client(&server)?;
            let num_lines = num_lines.or(if follow { Some(10) } else { None });
            let mut path = format!("{}/logs?follow={follow}", db_path(&database));
            if let Some(n) = num_lines {
                path.push_str(&format!("&num_lines={n}"));
            }
            let mut resp = client.send_ok("GET", &path, None)?;
            let reader = BufReader::new(resp.body_mut().as_reader());
            let mut out = std::io::stdout().lock();
            for line in reader.lines() {
                let line = match line {
                    Ok(l) => l,
                    // The server going away ends a followed stream: that is the end, not an error.
                    Err(_) if follow => break,
                    Err(e) => return Err(CliError::BadResponse(format!("reading the logs: {e}"))),
                };
                if line.trim().is_empty() {
                    continue;
                }
                let text = match format {
                    LogFormat::Json => line,
                    LogFormat::Text => logs::format_record(&line),
                };
                if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                    break; // stdout closed (e.g. piped into `head`)
                }
            }
            Ok(())
        }
        Command::Subscribe { database, queries, num_updates, timeout, print_initial_update, server } => {
            let timeout = match timeout {
                Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t.min(1e9))),
                Some(t) => return Err(CliError::InvalidArgument(format!("--timeout {t}: give seconds ≥ 0"))),
                None => None,
            };
            let client = session.client(&server)?;
            let (_, schema) = fetch_schema(&client, &database)?;
            let options = subscribe::SubscribeOptions { queries, num_updates, timeout, print_initial_update };
            let mut out = std::io::stdout().lock();
            subscribe::run_subscribe(&client, &database, &schema, &options, &mut out)
        }
        Command::Describe { database, entity_type, entity_name, json, server } => {
            let client = session.client(&server)?;
            let (raw, info) = fetch_schema(&client, &database)?;
            match (entity_type.as_deref(), entity_name.as_deref()) {
                (None, _) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&raw).unwrap_or_else(|_| raw.to_string())
                        );
                    } else {
                        stdout_write(&schema::render_describe(&database, &info))?;
                    }
                }
                (Some(kind), Some(entity)) => {
                    let mut only = schema::SchemaInfo {
                        typespace: info.typespace.clone(),
                        type_names: info.type_names.clone(),
                        ..Default::default()
                    };
                    match kind {
                        "table" => only.tables.extend(info.table(entity).cloned()),
                        "reducer" => only.reducers.extend(info.reducer(entity).cloned()),
                        other => {
                            return Err(CliError::InvalidArgument(format!(
                                "entity type `{other}`: use `table` or `reducer`"
                            )))
                        }
                    }
                    if only.tables.is_empty() && only.reducers.is_empty() {
                        return Err(CliError::InvalidArgument(format!(
                            "`{database}` has no {kind} `{entity}`"
                        )));
                    }
                    if json {
                        let v = match kind {
                            "table" => describe_table_json(&only),
                            _ => describe_reducer_json(&only),
                        };
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        stdout_write(&schema::render_describe(&database, &only))?;
                    }
                }
                (Some(_), None) => {
                    return Err(CliError::InvalidArgument("give the entity's name after its type".into()))
                }
            }
            Ok(())
        }
        Command::Delete { database, server } => {
            let client = session.client(&server)?;
            client.text("DELETE", &db_path(&database), None)?;
            println!("Deleted database `{database}`.");
            Ok(())
        }
        Command::List { server } => {
            let client = session.client(&server)?;
            let identity = match client.token().and_then(identity_of_token) {
                Some(id) => id,
                None => {
                    return Err(CliError::InvalidArgument(
                        "`list` needs an identity: run it without --anonymous".into(),
                    ))
                }
            };
            let answer = client.json("GET", &format!("/identity/{identity}/databases"), None)?;
            let ids: Vec<String> = answer
                .get("identities")
                .or_else(|| answer.get("addresses"))
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            println!("Associated database identities for {identity}:\n");
            let rows: Vec<Vec<String>> = ids
                .iter()
                .map(|id| {
                    let names = client
                        .json("GET", &format!("{}/names", db_path(id)), None)
                        .ok()
                        .and_then(|v| {
                            v.get("names")
                                .and_then(|n| n.as_array())
                                .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                        })
                        .unwrap_or_default();
                    vec![id.clone(), names]
                })
                .collect();
            println!("{}", sql::psql_table(&["db_identity".into(), "names".into()], &rows));
            Ok(())
        }
        Command::Identity { server } => {
            let client = session.client(&server)?;
            let identity = match client.token() {
                Some(t) => identity_of_token(t).unwrap_or_else(|| "?".into()),
                None => new_identity(&client)?.0,
            };
            println!("{identity}");
            Ok(())
        }
        Command::Login { server_issued_login, token, server } => {
            let target = server_issued_login.as_deref().or(server.server.as_deref());
            let url = resolve_server(target, &session.config)?;
            if let Some(token) = token {
                let identity = identity_of_token(&token).ok_or_else(|| {
                    CliError::InvalidArgument("that is not a JWT with a `hex_identity` claim".into())
                })?;
                session.config.tokens.insert(url.clone(), token);
                session.save()?;
                println!("Logged in to {url} as {identity}.");
                return Ok(());
            }
            let (identity, token) = new_identity(&Client::new(url.clone(), None))?;
            session.config.tokens.insert(url.clone(), token);
            session.save()?;
            println!("Logged in to {url} with a new server-issued identity: {identity}");
            Ok(())
        }
        Command::Logout { server } => {
            match server.server.as_deref() {
                Some(s) => {
                    let url = resolve_server(Some(s), &session.config)?;
                    session.config.tokens.remove(&url);
                    println!("Logged out of {url}.");
                }
                None => {
                    session.config.tokens.clear();
                    println!("Logged out of every server.");
                }
            }
            session.save()
        }
        Command::Server(cmd) => run_server_command(&mut session, cmd),
    }
}

fn describe_table_json(only: &schema::SchemaInfo) -> serde_json::Value {
    let t = &only.tables[0];
    serde_json::json!({
        "name": t.name,
        "access": if t.public { "public" } else { "private" },
        "columns": t.columns.elements.iter().enumerate().map(|(i, e)| serde_json::json!({
            "name": e.name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("{i}")),
            "type": schema::type_name(&e.algebraic_type, only),
        })).collect::<Vec<_>>(),
        "primary_key": t.primary_key,
    })
}

fn describe_reducer_json(only: &schema::SchemaInfo) -> serde_json::Value {
    let r = &only.reducers[0];
    serde_json::json!({
        "name": r.name,
        "params": r.params.elements.iter().enumerate().map(|(i, e)| serde_json::json!({
            "name": e.name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("{i}")),
            "type": schema::type_name(&e.algebraic_type, only),
        })).collect::<Vec<_>>(),
        "callable": r.callable,
        "lifecycle": r.lifecycle,
    })
}

fn run_server_command(session: &mut Session, cmd: ServerCommand) -> Result<(), CliError> {
    match cmd {
        ServerCommand::Add { url, name, default } => {
            let url = client::normalize_url(&url)?;
            if name.is_empty() || name.contains(['/', ':']) {
                return Err(CliError::InvalidArgument(format!("`{name}` cannot be a nickname")));
            }
            session.config.servers.retain(|s| s.nickname != name);
            session.config.servers.push(ServerEntry { nickname: name.clone(), url: url.clone() });
            if default {
                session.config.default_server = Some(name.clone());
            }
            session.save()?;
            println!("Added server `{name}` at {url}.");
            Ok(())
        }
        ServerCommand::List => {
            let default = session.config.default_server.clone();
            let mut rows: Vec<Vec<String>> = session
                .config
                .servers
                .iter()
                .map(|s| {
                    let mark = if default.as_deref() == Some(&s.nickname) { "***" } else { "" };
                    vec![mark.into(), s.nickname.clone(), s.url.clone()]
                })
                .collect();
            if !session.config.servers.iter().any(|s| s.nickname == "local") {
                let mark = if default.is_none() || default.as_deref() == Some("local") { "***" } else { "" };
                rows.insert(0, vec![mark.into(), "local".into(), DEFAULT_SERVER_URL.into()]);
            }
            println!("{}", sql::psql_table(&["DEFAULT".into(), "NICKNAME".into(), "URL".into()], &rows));
            Ok(())
        }
        ServerCommand::SetDefault { server } => {
            resolve_server(Some(&server), &session.config)?;
            session.config.default_server = Some(server.clone());
            session.save()?;
            println!("The default server is now `{server}`.");
            Ok(())
        }
        ServerCommand::Remove { server } => {
            let Some(url) = session.config.server_by_nickname(&server).map(str::to_owned) else {
                return Err(CliError::UnknownServer(server));
            };
            session.config.servers.retain(|s| s.nickname != server);
            session.config.tokens.remove(&url);
            if session.config.default_server.as_deref() == Some(&server) {
                session.config.default_server = None;
            }
            session.save()?;
            println!("Removed server `{server}`.");
            Ok(())
        }
        ServerCommand::Ping { server } => {
            let url = resolve_server(server.as_deref(), &session.config)?;
            let client = Client::new(url.clone(), None);
            client.text("GET", "/ping", None)?;
            println!("Server is online: {url}");
            Ok(())
        }
    }
}

/// `lightcone start`: runs the server in this process until it stops.
pub fn run_start(args: StartArgs) -> Result<(), CliError> {
    let data_dir = args.data_dir.unwrap_or_else(crate::server::default_data_dir);
    let durability = match args.durability {
        DurabilityArg::Fsync => lightcone_wal::Durability::Fsync,
        DurabilityArg::None => lightcone_wal::Durability::None,
    };
    let options = crate::server::ServerOptions { listen_addr: args.listen_addr, data_dir, durability };
    crate::server::run_blocking(options).map_err(|e| CliError::Aborted(format!("server: {e}")))
}

/// Whether `path` looks like a wasm module (for early, clear errors).
pub fn looks_like_wasm(path: &Path) -> bool {
    std::fs::read(path).map(|b| b.starts_with(b"\0asm")).unwrap_or(false)
}
