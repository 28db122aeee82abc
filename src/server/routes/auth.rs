//! `/auth` routes: thin handlers over [`AuthHandle`].

use actix_web::{
    HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    web,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{
    ACCESS_COOKIE, AuthError, AuthHandle, AuthUser, ClientInfo, RejectReason, Session, TokenPair,
    users::User,
};
use crate::problem::Problem;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not bare routes: a wrong method is then a 405 (with `Allow`), not a 404.
    cfg.service(web::resource("/auth/register").route(web::post().to(register)))
        .service(web::resource("/auth/login").route(web::post().to(login)))
        .service(web::resource("/auth/refresh").route(web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/logout-all").route(web::post().to(logout_all)))
        .service(web::resource("/auth/me").route(web::get().to(me)))
        .service(web::resource("/auth/sessions").route(web::get().to(sessions)))
        .service(web::resource("/auth/sessions/{sid}").route(web::delete().to(delete_session)));
}

/// The body of `POST /auth/register`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Register {
    /// 3 to 32 characters of `a-z`, `0-9`, `_`, `.` and `-`.
    #[schema(example = "alice", pattern = r"^[a-z0-9_.-]{3,32}$")]
    username: String,
    /// An email address: printable ASCII without spaces, one `@` with text on both sides, at
    /// most 254 characters.
    #[schema(
        example = "alice@example.com",
        max_length = 254,
        pattern = r"^[!-?A-~]+@[!-?A-~]+$"
    )]
    email: String,
    /// 8 to 1024 characters.
    #[schema(example = "correct horse", min_length = 8, max_length = 1024)]
    password: String,
}

/// Creates an account (it does not log in).
#[utoipa::path(
    post,
    path = "/auth/register",
    operation_id = "auth_register",
    tag = "auth",
    request_body = Register,
    responses(
        (status = 201, description = "Created.", body = User),
        (status = 409, description = "The username is taken (`username-taken`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks a rule (`validation-failed`).", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register(
    auth: web::Data<AuthHandle>,
    body: web::Json<Register>,
) -> Result<HttpResponse, AuthError> {
    let Register {
        username,
        email,
        password,
    } = body.into_inner();
    let user = auth.register(username, email, password).await?;
    Ok(HttpResponse::Created().json(user))
}

/// The body of `POST /auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Login {
    /// The account's username.
    #[schema(example = "alice")]
    username: String,
    /// Its password.
    #[schema(example = "correct horse")]
    password: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CookieQuery {
    /// Also set the access token as the `redkit_access` cookie (HttpOnly, SameSite=Strict).
    #[serde(default)]
    cookie: bool,
}

/// Logs in: a new session and its access/refresh token pair.
#[utoipa::path(
    post,
    path = "/auth/login",
    operation_id = "auth_login",
    tag = "auth",
    params(CookieQuery),
    request_body = Login,
    responses(
        (status = 200, description = "Logged in.", body = TokenPair,
            headers(("Set-Cookie" = String, description = "`redkit_access=<token>` with `?cookie=true`."))),
        (status = 401, description = "Unknown user or wrong password (`invalid-credentials`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account holds `--max-sessions-per-user` live sessions and the policy is `reject-new` (`session-limit`); no session was revoked.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins for this username from this \
            address (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    req: HttpRequest,
    auth: web::Data<AuthHandle>,
    limiter: web::Data<crate::ratelimit::RateLimitHandle>,
    query: web::Query<CookieQuery>,
    body: web::Json<Login>,
) -> Result<HttpResponse, actix_web::Error> {
    let Login { username, password } = body.into_inner();
    // No registered name is longer: refused before any limiter key, store or hash sees it.
    if username.len() > crate::auth::MAX_LOGIN_USERNAME_BYTES {
        tracing::info!(reason = "oversized-input", "auth: login refused");
        return Err(AuthError::InvalidCredentials.into());
    }
    // The login limit (`ratelimit::login` has its rules). The session records the client
    // address the limiter counts.
    let client = ClientInfo::of(&req, &limiter.config().trusted_proxies);
    let verify = auth.login(username.clone(), password, client);
    let wrong_password = |err: &AuthError| matches!(err, AuthError::InvalidCredentials);
    let result = match limiter
        .limit_login(&req, &username, verify, wrong_password)
        .await
    {
        Ok(result) => result,
        Err(refused) => return Ok(refused),
    };
    let pair = result?;
    let mut res = HttpResponse::Ok();
    res.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    if query.cookie {
        let cookie = Cookie::build(ACCESS_COOKIE, pair.access_token.clone())
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .secure(auth.secure_cookie() || req.connection_info().scheme() == "https")
            .max_age(CookieDuration::seconds(pair.expires_in))
            .finish();
        res.cookie(cookie);
    }
    Ok(res.json(pair))
}

/// The body of `POST /auth/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Refresh {
    /// The current refresh token of the session (it is spent by this call).
    refresh_token: String,
}

/// Spends a refresh token for a new pair. A spent one presented again within the reuse grace
/// window answers the same successor; later, or two generations back, it revokes its session.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    operation_id = "auth_refresh",
    tag = "auth",
    request_body = Refresh,
    responses(
        (status = 200, description = "A new pair.", body = TokenPair),
        (status = 401, description = "The refresh token is invalid, expired, reused (the session is now revoked), idle past the limit, or revoked.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn refresh(
    auth: web::Data<AuthHandle>,
    body: web::Json<Refresh>,
) -> Result<HttpResponse, AuthError> {
    let pair = auth.refresh(&body.refresh_token).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(pair))
}

fn cleared_cookie() -> Cookie<'static> {
    let mut cookie = Cookie::build(ACCESS_COOKIE, "")
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .finish();
    cookie.make_removal();
    cookie
}

/// Revokes the caller's session and clears the cookie.
#[utoipa::path(
    post,
    path = "/auth/logout",
    operation_id = "auth_logout",
    tag = "auth",
    responses(
        (status = 204, description = "Logged out (the cookie is cleared)."),
        (status = 401, description = "No valid access token (`WWW-Authenticate: Bearer`).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authenticated by cookie without this site's `Origin` (`cross-origin`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn logout(
    req: HttpRequest,
    auth: web::Data<AuthHandle>,
    user: AuthUser,
) -> Result<HttpResponse, actix_web::Error> {
    if let Some(problem) = crate::problem::cross_origin_cookie(&req, ACCESS_COOKIE) {
        return Err(problem.into());
    }
    auth.logout(&user.0).await?;
    Ok(HttpResponse::NoContent().cookie(cleared_cookie()).finish())
}

/// Revokes every session of the caller and clears the cookie.
#[utoipa::path(
    post,
    path = "/auth/logout-all",
    operation_id = "auth_logout_all",
    tag = "auth",
    responses(
        (status = 204, description = "Every session is revoked (the cookie is cleared)."),
        (status = 401, description = "No valid access token (`WWW-Authenticate: Bearer`).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authenticated by cookie without this site's `Origin` (`cross-origin`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn logout_all(
    req: HttpRequest,
    auth: web::Data<AuthHandle>,
    user: AuthUser,
) -> Result<HttpResponse, actix_web::Error> {
    if let Some(problem) = crate::problem::cross_origin_cookie(&req, ACCESS_COOKIE) {
        return Err(problem.into());
    }
    auth.logout_all(&user.0).await?;
    Ok(HttpResponse::NoContent().cookie(cleared_cookie()).finish())
}

/// The body of `GET /auth/me`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Me<'a> {
    /// The user's id.
    id: i64,
    /// The user's username.
    username: &'a str,
    /// The user's email.
    email: &'a str,
    /// The session of the token.
    session: &'a Session,
}

/// The caller and the session of their token.
#[utoipa::path(
    get,
    path = "/auth/me",
    operation_id = "auth_me",
    tag = "auth",
    responses(
        (status = 200, description = "The caller.", body = Me<'static>),
        (status = 401, description = "No valid access token (`WWW-Authenticate: Bearer`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn me(auth: web::Data<AuthHandle>, user: AuthUser) -> Result<HttpResponse, AuthError> {
    let session = auth
        .session(&user.0)
        .await?
        .ok_or(AuthError::Unauthorized(RejectReason::SessionGone))?;
    Ok(HttpResponse::Ok().json(Me {
        id: session.user_id,
        username: &session.username,
        email: &session.email,
        session: &session,
    }))
}

/// The body of `GET /auth/sessions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionList<'a> {
    /// The caller's live sessions.
    sessions: Vec<SessionItem<'a>>,
}

/// A session in `GET /auth/sessions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionItem<'a> {
    #[serde(flatten)]
    session: &'a Session,
    /// Whether this is the session of the request's token.
    current: bool,
}

/// The caller's live sessions.
#[utoipa::path(
    get,
    path = "/auth/sessions",
    operation_id = "auth_sessions",
    tag = "auth",
    responses(
        (status = 200, description = "The sessions.", body = SessionList<'static>),
        (status = 401, description = "No valid access token (`WWW-Authenticate: Bearer`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn sessions(auth: web::Data<AuthHandle>, user: AuthUser) -> Result<HttpResponse, AuthError> {
    let list = auth.sessions(user.0.user_id).await?;
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: list
            .iter()
            .map(|s| SessionItem {
                session: s,
                current: s.sid == user.0.sid,
            })
            .collect(),
    }))
}

/// Revokes one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/auth/sessions/{sid}",
    operation_id = "auth_delete_session",
    tag = "auth",
    params(("sid" = String, Path, description = "A session id from `GET /auth/sessions`.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No valid access token (`WWW-Authenticate: Bearer`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session of the caller.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is needed and cannot be reached, or revocation cannot be checked (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn delete_session(
    auth: web::Data<AuthHandle>,
    user: AuthUser,
    sid: web::Path<String>,
) -> Result<HttpResponse, AuthError> {
    auth.revoke_session(user.0.user_id, &sid).await?;
    Ok(HttpResponse::NoContent().finish())
}
