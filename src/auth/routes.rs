//! `/auth` routes: thin handlers over [`AuthHandle`].

use actix_web::{
    HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    web,
};
use serde::{Deserialize, Serialize};

use super::{ACCESS_COOKIE, AuthError, AuthHandle, AuthUser, ClientInfo, RejectReason, Session};

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

#[derive(Debug, Deserialize)]
struct Register {
    username: String,
    email: String,
    password: String,
}

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

#[derive(Debug, Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct CookieQuery {
    #[serde(default)]
    cookie: bool,
}

async fn login(
    req: HttpRequest,
    auth: web::Data<AuthHandle>,
    limiter: Option<web::Data<crate::ratelimit::RateLimitHandle>>,
    query: web::Query<CookieQuery>,
    body: web::Json<Login>,
) -> Result<HttpResponse, actix_web::Error> {
    let Login { username, password } = body.into_inner();
    // Failed attempts are limited per (username, client IP): checked before the password.
    let ip = limiter
        .as_ref()
        .and_then(|l| crate::ratelimit::client_ip(&req, &l.config().trusted_proxies));
    if let (Some(limiter), Some(ip)) = (&limiter, ip) {
        let decision = limiter.login_blocked(&username, ip).await;
        if !decision.allowed {
            return Ok(limiter.login_denied(&decision));
        }
    }
    let pair = match auth
        .login(username.clone(), password, ClientInfo::of(&req))
        .await
    {
        Ok(pair) => pair,
        Err(err) => {
            if let (Some(limiter), Some(ip), AuthError::InvalidCredentials) = (&limiter, ip, &err) {
                limiter.record_login_failure(&username, ip).await;
            }
            return Err(err.into());
        }
    };
    let mut res = HttpResponse::Ok();
    res.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    if query.cookie {
        let cookie = Cookie::build(ACCESS_COOKIE, pair.access_token.clone())
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .secure(req.connection_info().scheme() == "https")
            .max_age(CookieDuration::seconds(pair.expires_in))
            .finish();
        res.cookie(cookie);
    }
    Ok(res.json(pair))
}

#[derive(Debug, Deserialize)]
struct Refresh {
    refresh_token: String,
}

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

async fn logout(auth: web::Data<AuthHandle>, user: AuthUser) -> Result<HttpResponse, AuthError> {
    auth.logout(&user.0).await?;
    Ok(HttpResponse::NoContent().cookie(cleared_cookie()).finish())
}

async fn logout_all(
    auth: web::Data<AuthHandle>,
    user: AuthUser,
) -> Result<HttpResponse, AuthError> {
    auth.logout_all(&user.0).await?;
    Ok(HttpResponse::NoContent().cookie(cleared_cookie()).finish())
}

#[derive(Serialize)]
struct Me<'a> {
    id: i64,
    username: &'a str,
    email: &'a str,
    session: &'a Session,
}

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

#[derive(Serialize)]
struct SessionList<'a> {
    sessions: Vec<SessionItem<'a>>,
}

#[derive(Serialize)]
struct SessionItem<'a> {
    #[serde(flatten)]
    session: &'a Session,
    current: bool,
}

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

async fn delete_session(
    auth: web::Data<AuthHandle>,
    user: AuthUser,
    sid: web::Path<String>,
) -> Result<HttpResponse, AuthError> {
    auth.revoke_session(user.0.user_id, &sid).await?;
    Ok(HttpResponse::NoContent().finish())
}
