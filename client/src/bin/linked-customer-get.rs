//! Asks a linked-customer server which customer is linked to an entity:
//!
//! ```sh
//! cargo run -p linked-customer-client --features cli --bin linked-customer-get -- \
//!     --base-url http://127.0.0.1:8080 --user U --password P demo-department ORDER 1001
//! ```
//!
//! A server whose certificate comes from a private CA: `--base-url https://HOST:PORT --ca-cert
//! ca.pem` (that CA alone is then trusted).

use clap::Parser;
use linked_customer_client::{Client, Entity, Error};
use std::path::PathBuf;
use std::process::ExitCode;

const FOUND: u8 = 0;
const USAGE: u8 = 2;
const NONE_LINKED: u8 = 3;
const REFUSED: u8 = 4;
const NO_ANSWER: u8 = 5;

#[derive(Parser)]
#[command(
    about = "Print the customer, with their vehicles, linked to an entity of a department",
    after_help = "Exit status: 0 a customer is linked (printed as JSON); 3 none is linked; \
                  4 the server refused the request (its error envelope is printed as JSON); \
                  5 no usable answer (connection, TLS, timeout, or not this API); 2 bad usage."
)]
struct Args {
    /// The server root; the client adds the API's /customer base itself.
    #[arg(
        long,
        env = "LINKED_CUSTOMER_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    base_url: String,
    /// The service subscriber's username (no credentials are sent without it).
    #[arg(long, env = "LINKED_CUSTOMER_USER")]
    user: Option<String>,
    /// The service subscriber's password.
    #[arg(
        long,
        env = "LINKED_CUSTOMER_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    password: Option<String>,
    /// A CA certificate (PEM; several in one file are fine) to trust for an https base URL
    /// instead of the system's roots: for a server whose certificate comes from a private CA.
    #[arg(long, env = "LINKED_CUSTOMER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The department token, as issued to the subscriber.
    department: String,
    /// ORDER, APPOINTMENT, THREAD or PAYMENT.
    #[arg(value_parser = parse_entity)]
    entity: Entity,
    /// The entity's identifier (sent as given; the server checks it).
    #[arg(allow_negative_numbers = true)]
    id: i64,
}

fn parse_entity(value: &str) -> Result<Entity, String> {
    value
        .parse()
        .map_err(|_| "expected ORDER, APPOINTMENT, THREAD or PAYMENT".to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // A bad base URL or CA certificate is a usage error, told before any request.
    let client = match client(&args) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(USAGE);
        }
    };
    let answer = client
        .get_linked_customer(&args.department, args.entity, args.id)
        .await;
    ExitCode::from(match answer {
        Ok(Some(found)) => match serde_json::to_string_pretty(&found) {
            Ok(json) => {
                println!("{json}");
                FOUND
            }
            Err(err) => {
                eprintln!("error: could not print the customer: {err}");
                NO_ANSWER
            }
        },
        Ok(None) => {
            println!(
                "No customer is linked to {} {} in department {}.",
                args.entity, args.id, args.department
            );
            NONE_LINKED
        }
        Err(err) => {
            eprintln!("error: {}", chain(&err));
            match &err {
                Error::Api { body, .. } => {
                    if let Ok(json) = serde_json::to_string_pretty(body) {
                        println!("{json}");
                    }
                    REFUSED
                }
                _ => NO_ANSWER,
            }
        }
    })
}

/// The client the arguments ask for, or why it cannot be built.
fn client(args: &Args) -> Result<Client, String> {
    let mut client = Client::new(&args.base_url);
    if let Some(file) = &args.ca_cert {
        let pem = std::fs::read(file)
            .map_err(|err| format!("reading --ca-cert {}: {err}", file.display()))?;
        client = client.with_ca_certificate_pem(&pem);
    }
    if let Some(user) = &args.user {
        client = client.with_basic_auth(user, args.password.as_deref().unwrap_or_default());
    }
    client.check().map_err(|err| err.to_string())?;
    Ok(client)
}

/// The error and its causes: a transport error's own message is often just "error sending
/// request"; the reason (connection refused, certificate, ...) is further down.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
