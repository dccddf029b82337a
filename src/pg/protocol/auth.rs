//! Authentication exchanges the server may ask for during startup.
//!
//! The crypto is postgres-protocol's (SCRAM-SHA-256, MD5); this file only decides what to answer.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
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

/// libpq's `channel_binding` setting.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BindingMode {
    Disable,
    Prefer,
    Require,
}

impl BindingMode {
    pub fn parse(mode: &str) -> Option<BindingMode> {
        match mode {
            "disable" => Some(BindingMode::Disable),
            "prefer" => Some(BindingMode::Prefer),
            "require" => Some(BindingMode::Require),
            _ => None,
        }
    }
}

/// SCRAM channel binding for this login: what was asked for, the TLS session's
/// `tls-server-end-point` data (None without TLS, or for a certificate with no binding), and
/// whether the exchange actually bound to it.
pub struct Binding {
    mode: BindingMode,
    end_point: Option<Vec<u8>>,
    bound: bool,
}

impl Binding {
    pub fn new(mode: BindingMode, end_point: Option<Vec<u8>>) -> Binding {
        Binding {
            mode,
            end_point,
            bound: false,
        }
    }

    /// A password request (cleartext, MD5) cannot bind: refused under `require`, before
    /// anything of the password is sent.
    pub fn check_password_request(&self) -> Result<(), AuthError> {
        if self.mode == BindingMode::Require {
            return Err(AuthError(
                "channel binding required, but the server asked for a password \
                 authentication that does not support it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Under `require`, a login the server accepted without a bound SCRAM exchange (trust,
    /// say) may be a man in the middle's: refused.
    pub fn check_authenticated(&self) -> Result<(), AuthError> {
        if self.mode == BindingMode::Require && !self.bound {
            return Err(AuthError(
                "channel binding required, but the server authenticated the client without \
                 channel binding"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Default for Binding {
    fn default() -> Self {
        Binding::new(BindingMode::Prefer, None)
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
        binding: &mut Binding,
        out: &mut BytesMut,
    ) -> Result<(), AuthError> {
        let mut mechanisms = body.mechanisms();
        let mut offered = Vec::new();
        let (mut has_scram, mut has_plus) = (false, false);
        while let Some(m) = mechanisms.next()? {
            has_scram |= m == SCRAM_SHA_256;
            has_plus |= m == SCRAM_SHA_256_PLUS;
            offered.push(m.to_string());
        }
        // The binding data comes from the connecting side, which sees the TLS session (the
        // protocol object sits on any asyncio transport and cannot).
        let (mechanism, channel) = match (binding.mode, &binding.end_point, has_plus) {
            (BindingMode::Disable, _, _) => (SCRAM_SHA_256, ChannelBinding::unsupported()),
            (_, Some(data), true) => (
                SCRAM_SHA_256_PLUS,
                ChannelBinding::tls_server_end_point(data.clone()),
            ),
            (BindingMode::Require, None, _) => {
                return Err(AuthError(
                    "channel binding required, but the connection does not use TLS (or the \
                     server certificate's signature algorithm has no channel binding)"
                        .into(),
                ))
            }
            (BindingMode::Require, Some(_), false) => {
                return Err(AuthError(format!(
                    "channel binding required, but the server did not offer \
                     SCRAM-SHA-256-PLUS (it offered: {})",
                    offered.join(", ")
                )))
            }
            // We could bind and the server did not offer it: say so ("y"), so that a server
            // that does support it detects a downgrade by a man in the middle.
            (BindingMode::Prefer, Some(_), false) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
            (BindingMode::Prefer, None, _) => (SCRAM_SHA_256, ChannelBinding::unsupported()),
        };
        if mechanism == SCRAM_SHA_256 && !has_scram {
            return Err(AuthError(format!(
                "unsupported SASL authentication mechanisms requested by the server: {}",
                offered.join(", ")
            )));
        }
        let scram = ScramSha256::new(password_bytes(password), channel);
        frontend::sasl_initial_response(mechanism, scram.message(), out)?;
        binding.bound = mechanism == SCRAM_SHA_256_PLUS;
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
