//! `/events` routes: thin handlers over [`EventsHandle`].

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::events::{
    ChannelInfo, Credentials, EventsError, EventsHandle, Follow, StreamRequest, TICKET_TTL,
};
use crate::problem::Problem;

/// Registers the events routes (the ticket route first: `ticket` is not a channel to POST to).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not bare routes: a wrong method is then a 405 (with `Allow`), not a 404.
    cfg.service(web::resource("/events").route(web::get().to(subscribe_many)))
        .service(web::resource("/events/ticket").route(web::post().to(ticket)))
        .service(web::resource("/events/{channel}/info").route(web::get().to(info)))
        .service(
            web::resource("/events/{channel}")
                .route(web::get().to(subscribe))
                .route(web::post().to(publish)),
        );
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PublishQuery {
    /// The event type (`event:` field), 1 to 64 characters of `A-Z a-z 0-9 _ . -`; default
    /// `message`.
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    event: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SubscribeQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are sent).
    last_event_id: Option<String>,
    /// A single-use ticket from `POST /events/ticket`, for clients that cannot send headers.
    ticket: Option<String>,
    /// `true`: also send `event: join` / `event: leave` frames (data `{"user":"<id>"}`) when an
    /// authenticated user's first stream on the channel opens, or its last closes, on any
    /// instance.
    presence: Option<bool>,
}

/// The document's schema of `GET /events`'s `channel` list: 1 to 64 names of the channel
/// charset (utoipa puts no pattern on an array's items itself; the parameter is marked required
/// by `server::http::openapi`).
fn channel_list_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some(
            "A channel to follow; repeat it for more: 1 to 64 names (a repeated name counts, then collapses), \
             each 1 to 128 characters of `A-Z a-z 0-9 : _ . -`; `user:{id}` channels are private \
             to that user.",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[A-Za-z0-9:_.-]{1,128}$")),
        )
        .min_items(Some(1))
        .max_items(Some(64))
        .build()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MultiQuery {
    /// A channel to follow; repeat it for more: 1 to 64 names (a repeated one counts, then collapses), each
    /// 1 to 128 characters of `A-Z a-z 0-9 : _ . -`; `user:{id}` channels are private to that
    /// user.
    #[serde(default)]
    #[param(schema_with = channel_list_schema)]
    channel: Vec<String>,
    /// Resume after this position (an `id:` the stream sent; the `Last-Event-ID` header wins
    /// when both are sent).
    last_event_id: Option<String>,
    /// A single-use ticket from `POST /events/ticket`, for clients that cannot send headers.
    ticket: Option<String>,
    /// `true`: also send `event: join` / `event: leave` frames (data
    /// `{"channel":"<name>","user":"<id>"}`) for every listed channel.
    presence: Option<bool>,
}

/// The body of `POST /events/{channel}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Published {
    /// The event's id in the channel's history (a Redis stream id such as `1700000000000-0`).
    id: String,
}

/// The body of `POST /events/ticket`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ticket {
    /// Redeem as `?ticket=` on `GET /events/{channel}`, once.
    ticket: String,
    /// Seconds the ticket stays valid.
    expires_in: u64,
}

/// The request's token sources. The ticket is taken from the query by the caller; it is never
/// logged (redkit logs no query strings).
fn credentials(req: &HttpRequest, events: &EventsHandle, ticket: Option<String>) -> Credentials {
    let bearer = crate::client::bearer(req).map(|token| token.to_string());
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
///
/// Publishes the JSON body as one event to every subscriber of the channel (and its history).
#[utoipa::path(
    post,
    path = "/events/{channel}",
    operation_id = "events_publish",
    tag = "events",
    params(("channel" = String, Path, pattern = r"^[A-Za-z0-9:_.-]{1,128}$", description = "1 to 128 characters of `A-Z a-z 0-9 : _ . -`; `user:{id}` channels are private to that user."), PublishQuery),
    request_body(content = inline(serde_json::Value), content_type = "application/json",
        description = "Any JSON value: the event's data."),
    responses(
        (status = 202, description = "Published.", body = Published),
        (status = 400, description = "Invalid channel name or event type, or a malformed body.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's private channel.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The event's data is longer than the configured maximum \
            (64 KiB by default).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be reached, or the token's revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn publish(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    channel: web::Path<String>,
    query: web::Query<PublishQuery>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, EventsError> {
    events
        .authorize_publish(&channel, &credentials(&req, &events, None))
        .await?;
    let kind = query
        .event
        .as_deref()
        .unwrap_or(crate::events::DEFAULT_EVENT_TYPE);
    let id = events.publish_event(&channel, kind, &body).await?;
    Ok(HttpResponse::Accepted().json(Published { id: id.to_string() }))
}

/// The address an SSE stream's connection slot is counted under: the client as the rate limiter
/// sees it (trusted proxies, IPv6 grouped by its prefix), or without a limiter the peer, IPv6
/// grouped by the default /64 (one host holds a whole /64: per address, the cap would bind
/// nobody).
pub(crate) fn stream_client(
    req: &HttpRequest,
    limiter: Option<&crate::ratelimit::RateLimitHandle>,
) -> Option<std::net::IpAddr> {
    match limiter {
        Some(l) => crate::client::client_addr(req, &l.config().trusted_proxies)
            .map(|ip| crate::client::client_group(ip, l.config().ipv6_prefix)),
        None => crate::client::client_addr(req, &[])
            .map(|ip| crate::client::client_group(ip, crate::client::DEFAULT_IPV6_PREFIX)),
    }
}

/// `GET /events/{channel}` → `text/event-stream`.
///
/// Subscribes to a channel: events as Server-Sent Events (`id`, `event`, JSON `data`), with
/// heartbeats; `Last-Event-ID` resumes without gaps (or sends `event: reset`). Private channels
/// (`user:{id}`) need that user's token, cookie or ticket.
#[utoipa::path(
    get,
    path = "/events/{channel}",
    operation_id = "events_subscribe",
    tag = "events",
    params(("channel" = String, Path, pattern = r"^[A-Za-z0-9:_.-]{1,128}$", description = "1 to 128 characters of `A-Z a-z 0-9 : _ . -`; `user:{id}` channels are private to that user."), SubscribeQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id.")),
    responses(
        (status = 200, description = "The event stream (stays open).",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid channel name.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A private channel without a valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's private channel.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This address holds the most event streams allowed \
            (`too-many-streams`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down, holds the most event streams \
            allowed, or a ticket or the token's revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []), ("cookie" = []))
)]
async fn subscribe(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    limiter: Option<web::Data<crate::ratelimit::RateLimitHandle>>,
    channel: web::Path<String>,
    query: web::Query<SubscribeQuery>,
) -> Result<HttpResponse, EventsError> {
    let query = query.into_inner();
    let request = stream_request(
        &req,
        &events,
        limiter.as_ref().map(|l| l.get_ref()),
        query.last_event_id,
        query.ticket,
        query.presence,
    );
    events.open_sse(Follow::One(&channel), request).await
}

/// What both stream routes read of a request the same way: the client's address (the stream
/// caps'), the token sources, the `Last-Event-ID` header (else `?last_event_id=`), `?presence=`.
fn stream_request(
    req: &HttpRequest,
    events: &EventsHandle,
    limiter: Option<&crate::ratelimit::RateLimitHandle>,
    last_event_id: Option<String>,
    ticket: Option<String>,
    presence: Option<bool>,
) -> StreamRequest {
    StreamRequest {
        client: stream_client(req, limiter),
        credentials: credentials(req, events, ticket),
        last_event_id: req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(last_event_id),
        presence: presence.unwrap_or(false),
    }
}

/// `GET /events?channel=a&channel=b` → `text/event-stream`.
///
/// Follows several channels (1 to 64) on one stream. Each event's `event:` is its type and its
/// data is `{"channel":"<name>","id":"<stream id>","data":<the published JSON>}`; its `id:` is
/// the stream's position on every channel (`m<list>:<base>:<p1>,<p2>,…`, at most 2048
/// characters), which a reconnecting `EventSource` sends back as `Last-Event-ID`: each channel
/// then replays what it missed, exactly once and in order, or sends `event: reset` with data
/// `{"channel":"<name>"}` when it is too far behind (more than the replay bounds) or history no
/// longer reaches back. The stream opens with an `id:` block holding the starting positions.
/// A private channel (`user:{id}`) of another user refuses the whole list.
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "events_subscribe_many",
    tag = "events",
    params(MultiQuery,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume after this position (an `id:` this stream sent).")),
    responses(
        (status = 200, description = "The event stream (stays open).",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "No channel, more than 64 channel names, an invalid \
            channel name (`invalid-channel-list`, `invalid-channel`), a parameter of the wrong \
            type (`invalid-parameter`). A `Last-Event-ID` this server did not write resets \
            every channel.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A private channel without a valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A private channel of another user.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This address holds the most event streams allowed \
            (`too-many-streams`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down, holds the most event streams \
            allowed, or a ticket or the token's revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []), ("cookie" = []))
)]
async fn subscribe_many(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    limiter: Option<web::Data<crate::ratelimit::RateLimitHandle>>,
) -> Result<HttpResponse, EventsError> {
    // actix-web-lab's query reader takes repeated keys (`channel=a&channel=b`); its errors are
    // answered as every other query error here (400 `invalid-parameter`).
    let query = match actix_web_lab::extract::Query::<MultiQuery>::from_query(req.query_string()) {
        Ok(query) => query.into_inner(),
        Err(err) => {
            return Ok(crate::problem::invalid_query(&err.source().to_string()).into_response());
        }
    };
    let request = stream_request(
        &req,
        &events,
        limiter.as_ref().map(|l| l.get_ref()),
        query.last_event_id,
        query.ticket,
        query.presence,
    );
    events.open_sse(Follow::Many(&query.channel), request).await
}

/// `GET /events/{channel}/info` → `{"subscribers": n, "history": n}`.
#[utoipa::path(
    get,
    path = "/events/{channel}/info",
    operation_id = "events_info",
    tag = "events",
    params(("channel" = String, Path, pattern = r"^[A-Za-z0-9:_.-]{1,128}$", description = "1 to 128 characters of `A-Z a-z 0-9 : _ . -`; `user:{id}` channels are private to that user.")),
    responses(
        (status = 200, description = "The channel's subscribers on every instance (exact within \
            about a second of a join or leave; an instance that stopped is no longer counted \
            after 15 s) and its history length.",
            body = ChannelInfo),
        (status = 400, description = "Invalid channel name.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A private channel without a valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's private channel.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be reached, or the token's revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []), ("cookie" = []))
)]
async fn info(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
    channel: web::Path<String>,
) -> Result<HttpResponse, EventsError> {
    events
        .authorize_read(&channel, &credentials(&req, &events, None))
        .await?;
    Ok(HttpResponse::Ok().json(events.fleet_info(&channel).await?))
}

/// `POST /events/ticket` → `{"ticket": ..., "expires_in": 60}`.
///
/// A single-use ticket for `EventSource` clients, which cannot send `Authorization`.
#[utoipa::path(
    post,
    path = "/events/ticket",
    operation_id = "events_ticket",
    tag = "events",
    responses(
        (status = 200, description = "A ticket.", body = Ticket),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authenticated by cookie without this site's `Origin` (`cross-origin`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be reached, or the token's revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn ticket(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
) -> Result<HttpResponse, EventsError> {
    if let Some(problem) = crate::problem::cross_origin_cookie(&req, events.auth().cookie_name()) {
        return Ok(problem.into_response());
    }
    let ticket = events
        .issue_ticket(&credentials(&req, &events, None))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Ticket {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }))
}
