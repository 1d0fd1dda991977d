//! The admin token file of `--admin-token-file`: read, or created private (mode 0600) so
//! the first admin can act.
//!
//! This module must never log the token.

use super::{base64_url, random_bytes, Error, MIN_ADMIN_TOKEN_LEN, SECRET_BYTES, TOKEN_PREFIX};
use std::path::Path;

/// The admin token in `path`, or a new one written there (mode 0600) when the file does not
/// exist, so the first admin can act.
pub(super) fn load_or_create_admin_token(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::BadFile {
                    path: path.to_owned(),
                    reason: format!(
                        "an admin token must be one word of at least {MIN_ADMIN_TOKEN_LEN} characters \
                         (delete the file to have the engine create one)"
                    ),
                });
            }
            warn_if_readable_by_others(path);
            tracing::info!(path = %path.display(), "admin token loaded from the admin token file");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = format!("{TOKEN_PREFIX}{}", base64_url(&random_bytes::<SECRET_BYTES>()));
            write_private(path, &format!("{token}\n"))
                .map_err(|source| Error::WriteFile { path: path.to_owned(), source })?;
            tracing::warn!(path = %path.display(), "created a new admin token; read it from this file (mode 0600)");
            Ok(token)
        }
        Err(source) => Err(Error::ReadFile { path: path.to_owned(), source }),
    }
}

/// Creates `path` readable by its owner only, refusing to overwrite anything.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path) {
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the admin token file is readable by other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
