//! Builds the application from its state and binds it to a listener, so that tests can bind
//! port 0 and ask which port they got.

use crate::limits::deadline;
use crate::routes::linked_customer::{get_linked_customer, route};
use crate::routes::operations::{
    healthz, method_not_allowed, metrics, not_found, openapi_json, openapi_yaml, readyz,
};
use crate::state::AppState;
use crate::telemetry;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, guard, web};
use std::net::TcpListener;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Starts serving on `listener`. The server runs until its handle is told to stop (the binary
/// does so on SIGINT and SIGTERM), then finishes the requests in flight (up to 10 s).
pub fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let limits = state.limits;
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    // The middleware finds the limits and the metrics as app data of their own, so that they
    // need not know the state.
    let shared_metrics = web::Data::from(state.metrics.clone());
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(limits))
            .app_data(shared_metrics.clone())
            .wrap(from_fn(crate::errors::envelope_bare_not_found))
            .wrap(from_fn(telemetry::observe))
            .wrap(from_fn(crate::limits::track_activity))
            .service(
                web::scope("/customer").service(
                    web::resource(route())
                        .name("getLinkedCustomer")
                        .wrap(from_fn(deadline))
                        .route(get_or_head().to(get_linked_customer))
                        .default_service(method_not_allowed(ALLOW)),
                ),
            )
            .service(get_only("/healthz", get_or_head().to(healthz)))
            .service(get_only("/readyz", get_or_head().to(readyz)).wrap(from_fn(deadline)))
            .service(get_only("/metrics", get_or_head().to(metrics)))
            .service(get_only("/openapi.yaml", get_or_head().to(openapi_yaml)))
            .service(get_only("/openapi.json", get_or_head().to(openapi_json)))
            .service(web::redirect("/swagger-ui", "/swagger-ui/"))
            .service(SwaggerUi::new("/swagger-ui/{_:.*}").config(Config::from("/openapi.yaml")))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .max_connections(limits.max_connections.div_ceil(workers).max(1))
    .client_request_timeout(limits.header_timeout)
    .keep_alive(limits.keep_alive)
    .on_connect(crate::limits::watch_connection(limits))
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(10)
    .run();
    Ok(server)
}

/// What every path here allows: GET, and HEAD wherever GET works (RFC 9110; load balancers
/// probe with it). actix-web sends a HEAD answer's headers without its body.
const ALLOW: &str = "GET, HEAD";

fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

fn get_only(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(method_not_allowed(ALLOW))
}
