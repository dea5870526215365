//! The Finance keys the processor verifies ledger proofs with: the signer registry file, reloaded
//! when a proof names a kid it does not know (a rotation published to the file is picked up
//! without a restart, as `audit-verifier` does for checkpoints).

use std::path::PathBuf;

use evalstream_audit::trust::SignerRegistry;
use evalstream_domain::proof::{self, LedgerProof, ProofError};
use evalstream_domain::records::FinanceSettlement;
use tracing::{error, warn};

/// The registry and where it came from.
pub struct Signers {
    registry: SignerRegistry,
    path: Option<PathBuf>,
}

impl Signers {
    /// Keys from `registry`, reloaded from `path` (if any) on an unknown kid.
    pub fn new(registry: SignerRegistry, path: Option<PathBuf>) -> Self {
        Signers { registry, path }
    }

    /// Verifies `s`'s ledger proof (see [`evalstream_domain::proof`]).
    pub fn verify(&mut self, s: &FinanceSettlement) -> Result<LedgerProof, ProofError> {
        match proof::verify_settlement(s, &self.registry) {
            Err(ProofError::Signature { status: "unknown_signer", .. }) if self.reload(&s.kid) => {
                proof::verify_settlement(s, &self.registry)
            }
            other => other,
        }
    }

    /// Reloads the registry file when it now knows `kid`; whether it was reloaded.
    fn reload(&mut self, kid: &str) -> bool {
        let Some(path) = &self.path else { return false };
        match SignerRegistry::load(path) {
            Ok(r) if r.get(kid).is_some() && self.registry.get(kid).is_none() => {
                warn!(path = %path.display(), kid, "signer registry changed; using the new version");
                self.registry = r;
                true
            }
            Ok(_) => false,
            Err(e) => {
                error!(error = %e, "reloading the signer registry failed");
                false
            }
        }
    }
}
