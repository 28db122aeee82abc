use actix::Message;

use super::{AuthError, User, UserId};

/// Asks to validate, hash and store a new user; answers the user, or why not.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AuthError>")]
#[non_exhaustive]
pub struct CreateUser {
    /// Login name.
    pub username: String,
    /// Email address.
    pub email: String,
    /// Clear-text password (hashed on the actor's thread).
    pub password: String,
}

/// Asks whether a username/password pair is right; answers the user, or `None` (same work
/// either way).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<User>, AuthError>")]
#[non_exhaustive]
pub struct VerifyCredentials {
    /// Login name.
    pub username: String,
    /// Clear-text password.
    pub password: String,
}

/// Asks for one user by id; answers it, or `None`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<User>, AuthError>")]
pub struct GetUser(pub UserId);

impl CreateUser {
    /// A registration.
    pub fn new(username: String, email: String, password: String) -> Self {
        Self {
            username,
            email,
            password,
        }
    }
}

impl VerifyCredentials {
    /// A login attempt.
    pub fn new(username: String, password: String) -> Self {
        Self { username, password }
    }
}
