//! `--dev`: secrets from the environment, and a placeholder for each one that is unset.

use hub_core::secret::{EnvSecrets, Secret, SecretRef, SecretSource};
use tracing::warn;

/// `--dev`: environment first, then a placeholder, with one warning per unset reference.
#[derive(Default)]
pub struct DevSecrets(std::sync::Mutex<std::collections::HashSet<SecretRef>>);

impl SecretSource for DevSecrets {
    fn resolve(&self, r: &SecretRef) -> Option<Secret> {
        EnvSecrets.resolve(r).filter(|s| hub_core::secret::is_usable(s.expose())).or_else(|| {
            let mut warned = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if warned.insert(r.clone()) {
                warn!(secret = %r, "secret not set; --dev uses the placeholder `<{r}>`");
            }
            crate::mappings_cmd::EnvOrPlaceholder.resolve(r)
        })
    }
}
