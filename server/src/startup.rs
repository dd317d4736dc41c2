//! Builds the application from its state and binds it to a listener, so that tests can bind
//! port 0 and ask which port they got.

use crate::errors::ApiError;
use crate::limits::deadline;
use crate::routes::linked_customer::{get_linked_customer, route};
use crate::routes::operations::{
    healthz, method_not_allowed, metrics, not_found, openapi_json, openapi_yaml, readyz,
};
use crate::state::AppState;
use crate::telemetry;
use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{App, HttpServer, guard, web};
use std::net::{SocketAddr, TcpListener};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the server listens: the API's port, plain or TLS, and optionally a port of its own
/// for the operations endpoints (`/metrics`, `/readyz`), which then leave the API's port.
pub struct Listeners {
    pub api: TcpListener,
    pub tls: Option<rustls::ServerConfig>,
    pub admin: Option<TcpListener>,
}

/// The operations port's address, as app data: `None` when everything is on the API's port.
#[derive(Clone, Copy)]
struct AdminPort(Option<SocketAddr>);

/// Starts serving plain HTTP on `listener`, the operations endpoints included.
pub fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    serve(
        Listeners {
            api: listener,
            tls: None,
            admin: None,
        },
        state,
    )
}

/// Starts serving on `listeners`. The server runs until its handle is told to stop (the binary
/// does so on SIGINT and SIGTERM), then finishes the requests in flight (up to 10 s).
pub fn serve(listeners: Listeners, state: AppState) -> std::io::Result<Server> {
    let admin = AdminPort(match &listeners.admin {
        Some(admin) => Some(admin.local_addr()?),
        None => None,
    });
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
            .app_data(web::Data::new(admin))
            .wrap(from_fn(split_ports))
            .wrap(from_fn(crate::errors::envelope_bare_not_found))
            .wrap(from_fn(telemetry::observe))
            .wrap(from_fn(crate::limits::track_activity))
            .service(
                web::scope("/customer").service(
                    web::resource(route())
                        .name("getLinkedCustomer")
                        .wrap(from_fn(deadline))
                        .wrap(private_answer())
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
    .on_connect(crate::limits::watch_connection(limits));
    let server = match listeners.tls {
        Some(tls) => server.listen_rustls_0_23(listeners.api, tls)?,
        None => server.listen(listeners.api)?,
    };
    let server = match listeners.admin {
        Some(admin) => server.listen(admin)?,
        None => server,
    };
    Ok(server.disable_signals().shutdown_timeout(10).run())
}

/// The operations endpoints; with an operations port, they answer there only.
const ADMIN_PATHS: [&str; 2] = ["/metrics", "/readyz"];

/// With an operations port, `/metrics` and `/readyz` are not found on the API's port, and
/// nothing but them and `/healthz` is found on the operations port.
async fn split_ports(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let admin = request
        .app_data::<web::Data<AdminPort>>()
        .and_then(|admin| admin.0);
    let Some(admin) = admin else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let path = request.path();
    let allowed = if request.app_config().local_addr() == admin {
        ADMIN_PATHS.contains(&path) || path == "/healthz"
    } else {
        !ADMIN_PATHS.contains(&path)
    };
    if allowed {
        Ok(next.call(request).await?.map_into_boxed_body())
    } else {
        let (request, _) = request.into_parts();
        Ok(ServiceResponse::new(
            request,
            ApiError::NotFound.error_response(),
        ))
    }
}

/// Every answer of the operation carries a customer's personal data, or says something about
/// a credential: no cache may keep it, and no browser may guess another type for it.
fn private_answer() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
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
