use std::sync::Arc;

use actix::{Actor, Addr, Handler, SyncArbiter, SyncContext};
use rusqlite::Connection;

use super::{AuthError, Clock, CreateUser, GetUser, User, VerifyCredentials, users};
use crate::db::DatabaseLocation;

/// Owns a connection to the users table on a `SyncArbiter` thread, where argon2 hashing and
/// SQLite calls may block. See the [module docs](super).
pub struct UsersActor {
    conn: Connection,
    dummy_hash: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl Actor for UsersActor {
    type Context = SyncContext<Self>;
}

/// Starts the users actor: one thread for an in-memory database (each connection would see
/// its own), two for a file (two logins hash in parallel).
pub(crate) fn start(
    location: &DatabaseLocation,
    clock: Arc<dyn Clock>,
) -> Result<Addr<UsersActor>, AuthError> {
    let threads = if *location == DatabaseLocation::Memory {
        1
    } else {
        2
    };
    let mut conns = Vec::with_capacity(threads);
    for _ in 0..threads {
        conns.push(users::open(location)?);
    }
    // Unknown users are verified against this, so they cost what a wrong password costs.
    let dummy_hash: Arc<str> = users::hash_password(&super::tokens::random_id())?.into();
    let conns = std::sync::Mutex::new(conns);
    let location = location.clone();
    Ok(SyncArbiter::start(threads, move || {
        let conn = conns.lock().ok().and_then(|mut c| c.pop());
        let conn = match conn {
            Some(conn) => conn,
            // unwrap: the same location opened a moment ago; a users thread without its
            // database can do nothing useful.
            None => users::open(&location).unwrap(),
        };
        UsersActor {
            conn,
            dummy_hash: dummy_hash.clone(),
            clock: clock.clone(),
        }
    }))
}

impl Handler<CreateUser> for UsersActor {
    type Result = Result<User, AuthError>;

    fn handle(&mut self, msg: CreateUser, _ctx: &mut Self::Context) -> Self::Result {
        users::create(
            &self.conn,
            &msg.username,
            &msg.email,
            &msg.password,
            self.clock.now_secs(),
        )
    }
}

impl Handler<VerifyCredentials> for UsersActor {
    type Result = Result<Option<User>, AuthError>;

    fn handle(&mut self, msg: VerifyCredentials, _ctx: &mut Self::Context) -> Self::Result {
        users::verify(&self.conn, &msg.username, &msg.password, &self.dummy_hash)
    }
}

impl Handler<GetUser> for UsersActor {
    type Result = Result<Option<User>, AuthError>;

    fn handle(&mut self, msg: GetUser, _ctx: &mut Self::Context) -> Self::Result {
        users::get(&self.conn, msg.0)
    }
}
