//! Showing an error with its causes, for logs.

use std::error::Error;
use std::fmt;

/// Shows `error` followed by its [`source`](Error::source) chain, each
/// cause after a `": "`: `outer: cause: root cause`.
///
/// Use it where an error is logged, so the causes an error keeps are seen:
/// `warn!(error = %error_chain(&e), "…")`. A cause whose message the
/// previous one already shows (an error that prints its source itself) is
/// not repeated.
///
/// ```
/// use bonde_pressure_core::{TelephonyError, error_chain};
///
/// let io = std::io::Error::other("connection reset");
/// let e = TelephonyError::unavailable("no answer").with_source(io);
/// assert_eq!(
///     error_chain(&e).to_string(),
///     format!("{e}: connection reset"),
/// );
/// ```
pub fn error_chain<'a>(error: &'a (dyn Error + 'a)) -> ErrorChain<'a> {
    ErrorChain(error)
}

/// An error shown with its causes: see [`error_chain`].
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(&'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let message = cause.to_string();
            if !message.is_empty() && !shown.contains(&message) {
                write!(f, ": {message}")?;
                shown = message;
            }
            next = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    /// Prints its source itself.
    #[derive(Debug, thiserror::Error)]
    #[error("loud: {0}")]
    struct Loud(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Transparent(#[from] Middle);

    fn io() -> std::io::Error {
        std::io::Error::other("root")
    }

    #[test]
    fn shows_every_cause_in_order() {
        let e = Outer(Middle(io()));
        assert_eq!(error_chain(&e).to_string(), "outer: middle: root");
        assert_eq!(format!("{}", error_chain(&io())), "root");
    }

    #[test]
    fn does_not_repeat_a_cause_already_shown() {
        assert_eq!(error_chain(&Loud(io())).to_string(), "loud: root");
        let t = Transparent(Middle(io()));
        assert_eq!(error_chain(&t).to_string(), "middle: root");
    }

    #[test]
    fn works_on_trait_objects() {
        let boxed: Box<dyn Error + Send + Sync> = Box::new(Outer(Middle(io())));
        assert_eq!(error_chain(&*boxed).to_string(), "outer: middle: root");
    }
}
