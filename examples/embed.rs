//! A small notes service that embeds redkit as a library: its own routes and state, with redkit's
//! actors doing the caching, authentication, rate limiting and live events.
//!
//! What it shows:
//! - [`Services::start`] starts redkit's actors inside this app's actix system; none of redkit's
//!   own routes are mounted, only the handles are used.
//! - `GET /notes/summary` is computed through the cache ([`redkit::cache::cached`]): the
//!   computation runs once per TTL, whichever instance asks.
//! - `/search` is one scope wrapped with a rate-limit policy of its own
//!   ([`RateLimitHandle::middleware_for`](redkit::ratelimit::RateLimitHandle::middleware_for)):
//!   5 searches per minute per client; the other routes are not limited.
//! - `POST /notes` and `GET /me/notes` take the [`AuthUser`] extractor; `/signup` and `/login`
//!   issue tokens through [`AuthHandle`].
//! - `POST /notes` announces each new note with [`EventsHandle::publish`]; `GET /notes/live` is
//!   the Server-Sent-Events stream of those announcements (and, with Redis, of every instance's).
//!
//! Run it with `cargo run --example embed`. It reads the server's options and variables
//! (`REDIS_URL`, `BIND`, `SECRET_KEY`, `DATABASE_URL`, ...; `--help` lists them); without
//! `REDIS_URL` everything runs in process. Then, from another shell:
//!
//! ```text
//! curl -N localhost:8080/notes/live &
//! curl -H 'content-type: application/json' localhost:8080/signup \
//!      -d '{"username":"ada","email":"ada@example.com","password":"correct horse"}'
//! TOKEN=$(curl -s -H 'content-type: application/json' localhost:8080/login \
//!      -d '{"username":"ada","password":"correct horse"}' | jq -r .access_token)
//! curl -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!      localhost:8080/notes -d '{"text":"buy milk"}'
//! curl localhost:8080/notes/summary
//! curl 'localhost:8080/search?q=milk'   # the sixth search within a minute answers 429
//! ```

use std::{
    error::Error,
    net::SocketAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer,
    body::MessageBody,
    dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse},
    web,
};
use clap::Parser;
use redkit::{
    Config,
    auth::{AuthError, AuthHandle, AuthUser, ClientInfo},
    cache::{CacheError, CacheHandle},
    config::ServeArgs,
    events::{EventsError, EventsHandle},
    http::Services,
    ratelimit::{Policy, RateLimitHandle},
};
use serde::{Deserialize, Serialize};

/// The live-events channel new notes are announced on.
pub const CHANNEL: &str = "notes";
/// Searches allowed per client per [`SEARCH_WINDOW`].
pub const SEARCH_LIMIT: u64 = 5;
/// The search rate-limit window.
pub const SEARCH_WINDOW: Duration = Duration::from_secs(60);
/// How long a computed summary is reused.
pub const SUMMARY_TTL: Duration = Duration::from_secs(30);

/// A note.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// Its number, from 1.
    pub id: u64,
    /// The id of the user who wrote it.
    pub author: i64,
    /// What it says.
    pub text: String,
}

/// This app's own state: the notes, in memory.
#[derive(Debug, Default)]
pub struct Notes {
    items: Mutex<Vec<Note>>,
    /// How many times the summary was computed (each is a cache miss).
    pub summaries_computed: AtomicU64,
}

impl Notes {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<Note>) -> T) -> T {
        // A panic while holding the lock leaves a valid Vec: keep going.
        f(&mut self.items.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn add(&self, author: i64, text: String) -> Note {
        self.with(|items| {
            let note = Note {
                id: items.len() as u64 + 1,
                author,
                text,
            };
            items.push(note.clone());
            note
        })
    }

    fn matching(&self, keep: impl Fn(&Note) -> bool) -> Vec<Note> {
        self.with(|items| items.iter().filter(|n| keep(n)).cloned().collect())
    }
}

/// What `GET /notes/summary` answers; imagine it expensive.
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    notes: usize,
    words: usize,
}

#[derive(Debug, Deserialize)]
struct Signup {
    username: String,
    email: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct NewNote {
    text: String,
}

#[derive(Debug, Deserialize)]
struct Search {
    q: String,
}

async fn signup(
    auth: web::Data<AuthHandle>,
    body: web::Json<Signup>,
) -> Result<HttpResponse, AuthError> {
    let Signup {
        username,
        email,
        password,
    } = body.into_inner();
    let user = auth.register(username, email, password).await?;
    Ok(HttpResponse::Created().json(user))
}

async fn login(
    req: HttpRequest,
    auth: web::Data<AuthHandle>,
    limiter: web::Data<RateLimitHandle>,
    body: web::Json<Login>,
) -> Result<HttpResponse, AuthError> {
    let Login { username, password } = body.into_inner();
    // The login limit: an attempt is spent before the password is checked, and given back
    // unless the password was wrong; a refused attempt is a 429.
    let client = ClientInfo::of(&req, &limiter.config().trusted_proxies);
    let verify = auth.login(username.clone(), password, client);
    let wrong_password = |err: &AuthError| matches!(err, AuthError::InvalidCredentials);
    match limiter
        .limit_login(&req, &username, verify, wrong_password)
        .await
    {
        Ok(tokens) => Ok(HttpResponse::Ok().json(tokens?)),
        Err(refused) => Ok(refused),
    }
}

async fn list(notes: web::Data<Notes>) -> HttpResponse {
    HttpResponse::Ok().json(notes.matching(|_| true))
}

/// Stores the note, then announces it. The note does not need Redis: if the announcement fails
/// (Redis down), it is logged and the note is still created.
async fn create(
    user: AuthUser,
    notes: web::Data<Notes>,
    events: web::Data<EventsHandle>,
    body: web::Json<NewNote>,
) -> HttpResponse {
    let note = notes.add(user.0.user_id, body.into_inner().text);
    if let Err(err) = events.publish(CHANNEL, &serde_json::json!(note)).await {
        tracing::warn!(error = %err, note = note.id, "note not announced");
    }
    HttpResponse::Created().json(note)
}

async fn mine(user: AuthUser, notes: web::Data<Notes>) -> HttpResponse {
    HttpResponse::Ok().json(notes.matching(|n| n.author == user.0.user_id))
}

async fn summary(
    notes: web::Data<Notes>,
    cache: web::Data<CacheHandle>,
) -> Result<HttpResponse, CacheError> {
    let summary: Summary =
        redkit::cache::cached(&cache, "notes-summary", &(), SUMMARY_TTL, || async {
            notes.summaries_computed.fetch_add(1, Ordering::Relaxed);
            let all = notes.matching(|_| true);
            let words = all.iter().map(|n| n.text.split_whitespace().count()).sum();
            Ok::<_, CacheError>(Summary {
                notes: all.len(),
                words,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(summary))
}

async fn search(notes: web::Data<Notes>, query: web::Query<Search>) -> HttpResponse {
    let q = query.q.to_lowercase();
    HttpResponse::Ok().json(notes.matching(|n| n.text.to_lowercase().contains(&q)))
}

async fn live(
    req: HttpRequest,
    events: web::Data<EventsHandle>,
) -> Result<HttpResponse, EventsError> {
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    Ok(events
        .subscribe(CHANNEL, last_event_id)
        .await?
        .into_response())
}

/// The notes app on redkit's `services`, sharing `notes` between workers.
pub fn app(
    services: Services,
    notes: web::Data<Notes>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let searches = Policy::new("notes-search", SEARCH_LIMIT, SEARCH_WINDOW);
    App::new()
        .app_data(notes)
        .app_data(web::Data::new(services.cache.clone()))
        .app_data(web::Data::new(services.auth.clone()))
        .app_data(web::Data::new(services.ratelimit.clone()))
        .app_data(web::Data::new(services.events.clone()))
        // At the app's level, where `observe` counts every route into it.
        .app_data(web::Data::new(services.metrics.clone()))
        // Bad JSON, queries and paths answer problem+json like redkit's own routes.
        .app_data(redkit::problem::json_config(services.settings.body_limit))
        .app_data(redkit::problem::query_config())
        .service(web::resource("/signup").route(web::post().to(signup)))
        .service(web::resource("/login").route(web::post().to(login)))
        .service(
            web::resource("/notes")
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(web::resource("/notes/summary").route(web::get().to(summary)))
        .service(web::resource("/notes/live").route(web::get().to(live)))
        .service(web::resource("/me/notes").route(web::get().to(mine)))
        .service(
            web::scope("/search")
                .wrap(services.ratelimit.middleware_for(searches))
                .route("", web::get().to(search)),
        )
        // Problem+json errors and caught panics; outside them, request ids and metrics.
        .wrap(actix_web::middleware::from_fn(
            redkit::problem::problem_errors,
        ))
        .wrap(actix_web::middleware::from_fn(redkit::metrics::observe))
}

/// Starts redkit's actors and binds the notes server to `config.bind`; answers the server (to
/// be awaited) and the address it listens on. Call it inside an actix system.
///
/// # Errors
/// The address cannot be bound, or redkit cannot start (bad settings, unreadable database).
pub fn start(config: &Config) -> Result<(Server, SocketAddr), Box<dyn Error>> {
    let services = Services::start(config)?;
    let notes = web::Data::new(Notes::default());
    let server = HttpServer::new(move || app(services.clone(), notes.clone()))
        .workers(config.workers)
        // A client's FIN ends its connection, so a closed SSE stream frees its slot at once.
        .h1_allow_half_closed(false)
        .bind(config.bind)?;
    let addr = *server.addrs().first().ok_or("bound to no address")?;
    Ok((server.run(), addr))
}

/// The server's own command line and environment variables.
#[derive(Debug, Parser)]
#[command(about = "A notes service embedding redkit")]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let config = Config::from_args(&Cli::parse().serve)?;
    redkit::init_tracing(config.log_format);
    let (server, addr) = start(&config)?;
    println!("notes listening on http://{addr}");
    server.await?;
    Ok(())
}
