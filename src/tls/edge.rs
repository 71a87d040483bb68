//! What HTTPS changes for requests: the plain listeners answer ACME http-01 challenges and
//! (with `redirect_http`) send everything else to https://; HTTPS responses carry HSTS.
//! The proxy asks [`is_tls`] for the one fact it needs about the connection.

use http::{HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;

use super::config::TlsConfig;
use super::http01::Http01Tokens;

/// Whether the request arrived on a TLS listener.
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The request-time TLS behaviour of the proxy.
#[derive(Debug)]
pub struct Edge {
    redirect_http: bool,
    hsts: Option<HeaderValue>,
    /// The port in redirect URLs (omitted when 443).
    https_port: u16,
    tokens: Http01Tokens,
}

/// What the edge decided for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not ours: route it as usual.
    Pass,
    /// Reply with this status, optional Location and body.
    Reply {
        status: StatusCode,
        location: Option<String>,
        body: String,
    },
}

impl Edge {
    pub fn new(cfg: &TlsConfig, tokens: Http01Tokens) -> Self {
        Edge {
            redirect_http: cfg.redirect_http,
            // validated in config: a header value
            hsts: cfg
                .hsts
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            https_port: cfg.listen.first().map_or(443, |a| a.port()),
            tokens,
        }
    }

    /// Decides for a request on a plain (`https == false`) or TLS listener.
    pub fn decide(&self, https: bool, host: Option<&str>, path_and_query: &str) -> Answer {
        if https {
            return Answer::Pass;
        }
        let path = path_and_query.split('?').next().unwrap_or("");
        if let Some(found) = self.tokens.answer(path) {
            return match found {
                Some(key_auth) => Answer::Reply {
                    status: StatusCode::OK,
                    location: None,
                    body: key_auth,
                },
                None if self.redirect_http => Answer::Reply {
                    status: StatusCode::NOT_FOUND,
                    location: None,
                    body: "no such ACME challenge\n".into(),
                },
                None => Answer::Pass,
            };
        }
        if !self.redirect_http {
            return Answer::Pass;
        }
        match host.and_then(host_without_port) {
            Some(h) => {
                let port = match self.https_port {
                    443 => String::new(),
                    p => format!(":{p}"),
                };
                Answer::Reply {
                    status: StatusCode::PERMANENT_REDIRECT,
                    location: Some(format!("https://{h}{port}{path_and_query}")),
                    body: String::new(),
                }
            }
            None => Answer::Reply {
                status: StatusCode::BAD_REQUEST,
                location: None,
                body: "this site is served over https; the request needs a valid Host\n".into(),
            },
        }
    }

    /// Decides for a request (the router asks, first of all decisions).
    pub fn decide_request(&self, req: &RequestHeader, https: bool) -> Answer {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(req.uri.authority().map(|a| a.as_str()));
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        self.decide(https, host, pq)
    }

    /// Sends the answer the edge decided on.
    pub async fn reply(session: &mut Session, answer: Answer) -> Result<()> {
        let Answer::Reply {
            status,
            location,
            body,
        } = answer
        else {
            return Ok(());
        };
        let mut resp = ResponseHeader::build(status, Some(4))?;
        if let Some(l) = location {
            resp.insert_header(http::header::LOCATION, l)?;
        }
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(bytes::Bytes::from(body)), true)
            .await?;
        Ok(())
    }

    /// Adds Strict-Transport-Security to a response on a TLS listener.
    pub fn response_headers(&self, session: &Session, resp: &mut ResponseHeader) -> Result<()> {
        if let (Some(h), true) = (&self.hsts, is_tls(session)) {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, h.clone())?;
        }
        Ok(())
    }
}

/// The host of a Host header without its port, if it is a DNS name or IP literal.
fn host_without_port(h: &str) -> Option<String> {
    let h = h.trim().to_ascii_lowercase();
    if let Some(rest) = h.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| format!("[{ip}]"));
    }
    let name = h.split(':').next()?.trim_end_matches('.');
    (super::config::is_dns_name(name)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::http01::CHALLENGE_PREFIX;
    use super::*;
    use std::path::Path;

    fn edge(redirect: bool, port: u16) -> (Edge, Http01Tokens) {
        let text = format!(
            "[upstream]\nservers=[\"127.0.0.1:1\"]\n[tls]\nlisten=[\"127.0.0.1:{port}\"]\nacme={{domains=[\"a.example\"]}}\nredirect_http={redirect}\n"
        );
        let c = crate::config::Config::parse(&text, Path::new("t")).unwrap();
        let tokens = Http01Tokens::default();
        (Edge::new(&c.tls.unwrap(), tokens.clone()), tokens)
    }

    #[test]
    fn redirects_plain_requests_but_not_challenges() {
        let (e, tokens) = edge(true, 443);
        let tok = "abcdefghijklmnopqrstuvwxyz";
        tokens.insert(tok, "abc.thumb");
        let r = e.decide(false, Some("App.Example:80"), "/x?y=1");
        assert_eq!(
            r,
            Answer::Reply {
                status: StatusCode::PERMANENT_REDIRECT,
                location: Some("https://app.example/x?y=1".into()),
                body: String::new()
            }
        );
        let r = e.decide(
            false,
            Some("a.example"),
            &format!("{CHALLENGE_PREFIX}{tok}"),
        );
        assert!(
            matches!(r, Answer::Reply { status: StatusCode::OK, ref body, .. } if body == "abc.thumb")
        );
        let r = e.decide(
            false,
            Some("a.example"),
            &format!("{CHALLENGE_PREFIX}other"),
        );
        assert!(matches!(
            r,
            Answer::Reply {
                status: StatusCode::NOT_FOUND,
                ..
            }
        ));
        assert_eq!(e.decide(true, Some("a.example"), "/x"), Answer::Pass);
        let r = e.decide(false, Some("evil.example/@x"), "/");
        assert!(matches!(
            r,
            Answer::Reply {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ));
        let r = e.decide(false, None, "/");
        assert!(matches!(
            r,
            Answer::Reply {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ));
    }

    #[test]
    fn redirect_keeps_a_non_default_port_and_ipv6() {
        let (e, _) = edge(true, 8443);
        let r = e.decide(false, Some("[::1]:8080"), "/");
        assert!(
            matches!(r, Answer::Reply { location: Some(ref l), .. } if l == "https://[::1]:8443/")
        );
        let (e, _) = edge(false, 8443);
        assert_eq!(e.decide(false, Some("a.example"), "/"), Answer::Pass);
    }
}
