//! One ACME conversation (RFC 8555 section 7): load or create the account, order a
//! certificate for the configured names, answer each authorization's challenge, finalize
//! with a fresh key, download the chain. JWS, nonces and polling are instant-acme's.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::sign::CertifiedKey;

use super::cert::alpn_challenge_key;
use super::state::StateDir;
use super::{AcmeConfig, AcmeError, Challenge, Challenges};

/// How long the server may take to validate the challenges, and then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// The account stored in state_dir, or a new one (stored at once, 0600).
pub async fn account(settings: &AcmeConfig, state: &StateDir) -> Result<Account, AcmeError> {
    super::check_directory_ca(settings).map_err(AcmeError::DirectoryCa)?;
    let builder = || match &settings.directory_ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    if let Some(credentials) = state.load_account()? {
        return builder()
            .map_err(AcmeError::Account)?
            .from_credentials(credentials)
            .await
            .map_err(AcmeError::Account);
    }
    let contact: Vec<String> = settings
        .email
        .iter()
        .map(|e| format!("mailto:{e}"))
        .collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()
        .map_err(AcmeError::Account)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(AcmeError::Account)?;
    state.save_account(&credentials)?;
    tracing::info!(account = account.id(), "acme: account created");
    Ok(account)
}

/// What was published for the validation server; withdrawn when dropped, whatever way the
/// order ends (success, error, or shutdown cancelling the future).
struct Published<'a> {
    challenges: &'a dyn Challenges,
    alpn: Vec<String>,
    http: Vec<String>,
}

impl<'a> Published<'a> {
    fn alpn(&mut self, domain: String, key: Arc<CertifiedKey>) {
        self.challenges.set_alpn_challenge(&domain, Some(key));
        self.alpn.push(domain);
    }
    fn http(&mut self, token: String, key_authorization: String) {
        self.challenges.set_http01(&token, Some(key_authorization));
        self.http.push(token);
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for d in &self.alpn {
            self.challenges.set_alpn_challenge(d, None);
        }
        for t in &self.http {
            self.challenges.set_http01(t, None);
        }
    }
}

/// Orders a certificate for `domains`; returns (PEM chain, PEM private key).
pub async fn obtain(
    account: &Account,
    domains: &[String],
    kind: Challenge,
    challenges: &dyn Challenges,
) -> Result<(String, String), AcmeError> {
    let identifiers: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(AcmeError::Order)?;
    let mut published = Published {
        challenges,
        alpn: Vec::new(),
        http: Vec::new(),
    };
    let challenge_type = match kind {
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Challenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(AcmeError::Order)?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(AcmeError::Invalid(format!("authorization is {status:?}"))),
        }
        let mut challenge = authz
            .challenge(challenge_type.clone())
            .ok_or(AcmeError::NoChallenge(kind))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            Challenge::TlsAlpn01 => {
                let domain = challenge.identifier().to_string();
                let key = alpn_challenge_key(&domain, key_authorization.digest().as_ref())
                    .map_err(AcmeError::Certificate)?;
                published.alpn(domain, key);
            }
            Challenge::Http01 => published.http(
                challenge.token.clone(),
                key_authorization.as_str().to_string(),
            ),
        }
        challenge.set_ready().await.map_err(AcmeError::Order)?;
    }
    // The order's error (an API error here) or status `invalid` means a failed validation.
    match order.poll_ready(&POLL).await {
        Ok(OrderStatus::Ready) => {}
        Ok(_) | Err(instant_acme::Error::Api(_)) => {
            return Err(AcmeError::Invalid(validation_errors(&mut order).await))
        }
        Err(e) => return Err(AcmeError::Order(e)),
    }
    drop(published);
    let key_pem = order.finalize().await.map_err(AcmeError::Finalize)?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(AcmeError::Finalize)?;
    Ok((chain_pem, key_pem))
}

/// The CA's reasons for failed challenges, for the log (bounded: it is the CA's text).
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            for c in &state.challenges {
                if let Some(p) = &c.error {
                    reasons.push(
                        p.detail
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", p.r#type)),
                    );
                }
            }
        }
    }
    let mut text = if reasons.is_empty() {
        "the order became invalid".to_string()
    } else {
        reasons.join("; ")
    };
    text.truncate(text.floor_char_boundary(1000));
    text
}
