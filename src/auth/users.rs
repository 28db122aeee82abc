//! The users table: validation, argon2id hashing and SQL. Called only from the users actor's
//! thread (or the CLI), never from an async worker: argon2 takes tens of milliseconds of CPU.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{AuthError, UserId};
use crate::db::DatabaseLocation;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT    NOT NULL UNIQUE,
        email         TEXT    NOT NULL,
        password_hash TEXT    NOT NULL,
        created_at    INTEGER NOT NULL
    );
";

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password, in characters (at most 4 KiB: bounds the hashing work a request
/// can ask for).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A user account, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct User {
    /// Database id.
    #[schema(value_type = i64)]
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// Email address.
    pub email: String,
}

/// Checks a registration's fields.
///
/// # Errors
/// [`AuthError::Invalid`] naming the first bad field.
pub fn validate_new_user(username: &str, email: &str, password: &str) -> Result<(), AuthError> {
    let len = username.chars().count();
    if !(3..=32).contains(&len)
        || !username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        return Err(AuthError::Invalid(
            "username must be 3 to 32 characters of a-z, 0-9, '_', '.' and '-'",
        ));
    }
    // Printable ASCII without spaces, exactly one `@` with text on both sides: what the API
    // document states as `^[!-?A-~]+@[!-?A-~]+$`, maxLength 254.
    let email_ok = email.len() <= 254
        && email.bytes().all(|b| (b'!'..=b'~').contains(&b))
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if !email_ok {
        return Err(AuthError::Invalid("email must look like name@domain"));
    }
    let chars = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&chars) {
        return Err(AuthError::Invalid("password must be 8 to 1024 characters"));
    }
    Ok(())
}

/// Opens the database at `location` and creates the users table if needed.
///
/// # Errors
/// [`AuthError::Database`] when it cannot be opened.
pub fn open(location: &DatabaseLocation) -> Result<Connection, AuthError> {
    let conn = match location {
        DatabaseLocation::File(path) => Connection::open(path)?,
        DatabaseLocation::Memory => Connection::open_in_memory()?,
    };
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Hashes `password` with argon2id and the crate's recommended parameters.
///
/// # Errors
/// [`AuthError::Internal`] if hashing fails (it does not with these parameters).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("argon2: {e}")))
}

fn verify_hash(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Validates, hashes and inserts a user.
///
/// # Errors
/// [`AuthError::Invalid`], [`AuthError::UsernameTaken`], or a database failure.
pub fn create(
    conn: &Connection,
    username: &str,
    email: &str,
    password: &str,
    now: i64,
) -> Result<User, AuthError> {
    validate_new_user(username, email, password)?;
    let hash = hash_password(password)?;
    let inserted = conn.execute(
        "INSERT INTO users (username, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![username, email, hash, now],
    );
    match inserted {
        Ok(_) => Ok(User {
            id: conn.last_insert_rowid(),
            username: username.to_owned(),
            email: email.to_owned(),
        }),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(AuthError::UsernameTaken)
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks credentials. An unknown user costs the same argon2 work as a wrong password: the
/// password is verified against `dummy_hash`.
///
/// # Errors
/// A database failure.
pub fn verify(
    conn: &Connection,
    username: &str,
    password: &str,
    dummy_hash: &str,
) -> Result<Option<User>, AuthError> {
    let row = conn
        .prepare_cached("SELECT id, email, password_hash FROM users WHERE username = ?1")?
        .query_row([username], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    match row {
        Some((id, email, hash)) => Ok(verify_hash(password, &hash).then(|| User {
            id,
            username: username.to_owned(),
            email,
        })),
        None => {
            let _ = verify_hash(password, dummy_hash);
            Ok(None)
        }
    }
}

/// One user by id.
///
/// # Errors
/// A database failure.
pub fn get(conn: &Connection, id: UserId) -> Result<Option<User>, AuthError> {
    Ok(conn
        .prepare_cached("SELECT id, username, email FROM users WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(User {
                id: r.get(0)?,
                username: r.get(1)?,
                email: r.get(2)?,
            })
        })
        .optional()?)
}
