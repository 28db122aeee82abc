//! `/events` routes: thin handlers over [`EventsHandle`].

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::Deserialize;

use super::{Credentials, EventsError, EventsHandle, TICKET_TTL};

/// Registers the events routes (the ticket route first: `ticket` is not a channel to POST to).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not bare routes: a wrong method is then a 405 (with `Allow`), not a 404.
    cfg.service(web::resource("/events/ticket").route(web::post().to(ticket)))
        .service(web::resource("/events/{channel}/info").route(web::get().to(info)))
        .service(
            web::resource("/events/{channel}")
                .route(web::get().to(subscribe))
                .route(web::post().to(publish)),
        );
}

#[derive(Debug, Deserialize)]
struct PublishQuery {
    event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SubscribeQuery {
    last_event_id: Option<String>,
    ticket: Option<String>,
}

/// The request's token sources. The ticket is taken from the query by the caller; it is never
/// logged (redkit logs no query strings).
fn credentials(req: &HttpRequest, events: &EventsHandle, ticket: Option<String>) -> Credentials {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let cookie = req
        .cookie(events.auth().cookie_name())
        .map(|c| c.value().to_owned());
    Credentials {
        bearer,
        cookie,
        ticket,
    }
}

/// `POST /events/{channel}?event=TYPE` → 202 `{"id": ...}`.
async fn publish(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    channel: web::Path<String>,
    query: web::Query<PublishQuery>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, EventsError> {
    events
        .authenticate(&credentials(&req, &events, None))
        .await?;
    let kind = query
        .event
        .as_deref()
        .unwrap_or(super::frame::DEFAULT_EVENT_TYPE);
    let id = events.publish_event(&channel, kind, &body).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": id.to_string() })))
}

/// `GET /events/{channel}` → `text/event-stream`.
async fn subscribe(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    channel: web::Path<String>,
    query: web::Query<SubscribeQuery>,
) -> Result<HttpResponse, EventsError> {
    let query = query.into_inner();
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id);
    let credentials = credentials(&req, &events, query.ticket);
    let stream = events
        .open(&channel, &credentials, last_event_id.as_deref())
        .await?;
    Ok(stream.into_response())
}

/// `GET /events/{channel}/info` → `{"subscribers": n, "history": n}`.
async fn info(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    channel: web::Path<String>,
) -> Result<HttpResponse, EventsError> {
    events
        .authorize_read(&channel, &credentials(&req, &events, None))
        .await?;
    Ok(HttpResponse::Ok().json(events.info(&channel).await?))
}

/// `POST /events/ticket` → `{"ticket": ..., "expires_in": 60}`.
async fn ticket(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
) -> Result<HttpResponse, EventsError> {
    let ticket = events
        .issue_ticket(&credentials(&req, &events, None))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "ticket": ticket, "expires_in": TICKET_TTL.as_secs() })))
}
