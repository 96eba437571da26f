//! The operator's do-not-call file: numbers put on the list at start-up.

use std::path::Path;

use bonde_pressure_core::{PhoneNumber, Region};

/// Why the do-not-call file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DoNotCallFileError {
    /// The file could not be read.
    #[error("cannot read do-not-call file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a phone number (the number itself is not shown).
    #[error("do-not-call file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// Parses a do-not-call file: one number per line (E.164, or national read
/// in `region`); blank lines and text after `#` are ignored. Numbers are
/// only checked to be phone numbers (not against the number policy: listing
/// a number that may not be called anyway does no harm).
pub fn parse_do_not_call(text: &str, region: Region) -> Result<Vec<PhoneNumber>, (usize, String)> {
    let mut numbers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let n = PhoneNumber::parse(line, region).map_err(|e| (i + 1, e.to_string()))?;
        numbers.push(n);
    }
    Ok(numbers)
}

/// Loads a do-not-call file (see [`parse_do_not_call`]).
pub fn load_do_not_call_file(
    path: &Path,
    region: Region,
) -> Result<Vec<PhoneNumber>, DoNotCallFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DoNotCallFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_do_not_call(&text, region).map_err(|(line, reason)| DoNotCallFileError::Line {
        path: shown,
        line,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_errors() {
        let text = "# opted out by e-mail\n+5511912345678\n\n(11) 91234-5679  # national\n";
        let n = parse_do_not_call(text, Region::BRAZIL).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].as_e164(), "+5511912345679");
        let err = parse_do_not_call("+5511912345678\nnot a number\n", Region::BRAZIL).unwrap_err();
        assert_eq!(err.0, 2);
    }
}
