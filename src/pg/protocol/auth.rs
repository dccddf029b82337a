//! Authentication exchanges the server may ask for during startup.
//!
//! The crypto is postgres-protocol's (SCRAM-SHA-256, MD5); this file only decides what to answer.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::AuthenticationSaslBody;
use postgres_protocol::message::frontend;

/// Where an authentication exchange stands.
#[derive(Default)]
pub enum Auth {
    #[default]
    Idle,
    Scram(Box<ScramSha256>),
}

/// A fault while authenticating, reported by the caller as an `InterfaceError`.
pub struct AuthError(pub String);

impl From<std::io::Error> for AuthError {
    fn from(e: std::io::Error) -> Self {
        AuthError(format!("authentication exchange failed: {e}"))
    }
}

fn password_bytes(password: &Option<String>) -> &[u8] {
    // With no password configured we still answer: the server then rejects the login with
    // its own SQLSTATE (28P01), which is the error users expect to see.
    password.as_deref().unwrap_or("").as_bytes()
}

pub fn cleartext(password: &Option<String>, out: &mut BytesMut) -> Result<(), AuthError> {
    frontend::password_message(password_bytes(password), out)?;
    Ok(())
}

pub fn md5(
    user: &str,
    password: &Option<String>,
    salt: [u8; 4],
    out: &mut BytesMut,
) -> Result<(), AuthError> {
    let hashed = md5_hash(user.as_bytes(), password_bytes(password), salt);
    frontend::password_message(hashed.as_bytes(), out)?;
    Ok(())
}

impl Auth {
    pub fn sasl_start(
        &mut self,
        body: &AuthenticationSaslBody,
        password: &Option<String>,
        out: &mut BytesMut,
    ) -> Result<(), AuthError> {
        let mut mechanisms = body.mechanisms();
        let mut offered = Vec::new();
        let mut has_scram = false;
        while let Some(m) = mechanisms.next()? {
            has_scram |= m == "SCRAM-SHA-256";
            offered.push(m.to_string());
        }
        if !has_scram {
            return Err(AuthError(format!(
                "unsupported SASL authentication mechanisms requested by the server: {}",
                offered.join(", ")
            )));
        }
        // Channel binding needs the server certificate's hash from the TLS layer, which a
        // protocol object on an arbitrary asyncio transport cannot get; SCRAM-SHA-256 without
        // binding is what asyncpg offers too.
        let scram = ScramSha256::new(password_bytes(password), ChannelBinding::unsupported());
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), out)?;
        *self = Auth::Scram(Box::new(scram));
        Ok(())
    }

    pub fn sasl_continue(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), AuthError> {
        match self {
            Auth::Scram(scram) => {
                scram.update(data)?;
                frontend::sasl_response(scram.message(), out)?;
                Ok(())
            }
            Auth::Idle => Err(AuthError("unexpected SASL continue message".into())),
        }
    }

    pub fn sasl_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let result = match self {
            Auth::Scram(scram) => scram
                .finish(data)
                .map_err(|e| AuthError(format!("SCRAM server signature check failed: {e}"))),
            Auth::Idle => Err(AuthError("unexpected SASL final message".into())),
        };
        *self = Auth::Idle;
        result
    }
}
