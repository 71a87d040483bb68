//! Route templates: paths such as `/ws/chat/{room}/` (or prefixes, `/ws/*`) and group names
//! such as `chat-{room}`, `updates-{user}`, `feed-{query.topic}`.

use std::collections::BTreeMap;
use std::fmt;

/// Values a group template can use: path parameters, the user, query parameters.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    pub params: BTreeMap<String, String>,
    pub user: Option<String>,
    pub query: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Param(String),
}

/// A path template. Parameters are whole segments; a trailing `*` makes it a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segs: Vec<Seg>,
    prefix: bool,
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PathTemplate {
    pub fn parse(raw: &str, prefix: bool) -> Result<PathTemplate, String> {
        if !raw.starts_with('/') {
            return Err(format!("`{raw}` must start with /"));
        }
        let (body, prefix) = match raw.strip_suffix('*') {
            Some(b) => (b, true),
            None => (raw, prefix),
        };
        let mut parts: Vec<&str> = body.split('/').collect();
        if prefix && parts.len() > 1 && parts.last() == Some(&"") {
            parts.pop();
        }
        let mut segs = Vec::new();
        let mut seen = Vec::new();
        for p in parts {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if !is_ident(name) {
                    return Err(format!(
                        "`{{{name}}}` is not a parameter name (letters, digits, _)"
                    ));
                }
                if seen.contains(&name) {
                    return Err(format!("parameter `{name}` appears twice"));
                }
                seen.push(name);
                segs.push(Seg::Param(name.to_string()));
            } else if p.contains(['{', '}', '*']) {
                return Err(format!("`{p}`: a parameter must be a whole path segment, like /{{room}}/, and `*` may only end the path"));
            } else {
                segs.push(Seg::Lit(p.to_string()));
            }
        }
        Ok(PathTemplate {
            raw: raw.to_string(),
            segs,
            prefix,
        })
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Param(p) => Some(p.as_str()),
            Seg::Lit(_) => None,
        })
    }

    /// The parameters when `path` matches.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < self.segs.len() || (!self.prefix && parts.len() != self.segs.len()) {
            return None;
        }
        let mut params = BTreeMap::new();
        for (seg, part) in self.segs.iter().zip(&parts) {
            match seg {
                Seg::Lit(l) if l == part => {}
                Seg::Lit(_) => return None,
                Seg::Param(_) if part.is_empty() => return None,
                Seg::Param(name) => {
                    params.insert(name.clone(), (*part).to_string());
                }
            }
        }
        Some(params)
    }

    /// Whether some path matches both templates.
    pub fn overlaps(&self, other: &PathTemplate) -> bool {
        let (a, b) = (&self.segs, &other.segs);
        let compatible = |x: &Seg, y: &Seg| match (x, y) {
            (Seg::Lit(l), Seg::Lit(m)) => l == m,
            (Seg::Param(_), Seg::Lit(l)) | (Seg::Lit(l), Seg::Param(_)) => !l.is_empty(),
            (Seg::Param(_), Seg::Param(_)) => true,
        };
        let lengths_ok = match (self.prefix, other.prefix) {
            (false, false) => a.len() == b.len(),
            (true, false) => b.len() >= a.len(),
            (false, true) => a.len() >= b.len(),
            (true, true) => true,
        };
        lengths_ok && a.iter().zip(b).all(|(x, y)| compatible(x, y))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)?;
        if self.prefix && !self.raw.ends_with('*') {
            f.write_str(" (prefix)")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Param(String),
    User,
    Query(String),
}

/// A group name template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTemplate {
    raw: String,
    parts: Vec<Part>,
}

impl GroupTemplate {
    /// Parses `raw`, accepting only the path parameters in `params`.
    pub fn parse(raw: &str, params: &[&str]) -> Result<GroupTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{raw}`: unclosed {{"))?
                + open;
            let var = &rest[open + 1..close];
            parts.push(match var {
                "user" => Part::User,
                v if v.starts_with("query.") && is_ident(&v[6..]) => {
                    Part::Query(v[6..].to_string())
                }
                v if params.contains(&v) => Part::Param(v.to_string()),
                v => {
                    let mut known: Vec<String> =
                        params.iter().map(|p| format!("{{{p}}}")).collect();
                    known.push("{user}".into());
                    known.push("{query.NAME}".into());
                    return Err(format!(
                        "`{{{v}}}` is not a known variable; this route has {}",
                        known.join(", ")
                    ));
                }
            });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{raw}`: stray }}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        let t = GroupTemplate {
            raw: raw.to_string(),
            parts,
        };
        // Check the literal parts against the group-name rules with sample values.
        let sample = t.parts.iter().map(|p| match p {
            Part::Lit(l) => l.as_str(),
            _ => "x",
        });
        let sample: String = sample.collect();
        if let Err(e) = crate::hub::check_group_name(&sample) {
            return Err(format!("`{raw}`: {e}"));
        }
        Ok(t)
    }

    pub fn uses_user(&self) -> bool {
        self.parts.contains(&Part::User)
    }

    /// The group name for one connection; Err names what is missing or invalid.
    pub fn render(&self, vars: &Vars) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Param(n) => out.push_str(
                    vars.params
                        .get(n)
                        .ok_or_else(|| format!("path parameter `{n}` missing"))?,
                ),
                Part::User => out.push_str(
                    vars.user
                        .as_deref()
                        .ok_or("no user: the auth answer named none")?,
                ),
                Part::Query(n) => out.push_str(
                    vars.query
                        .get(n)
                        .ok_or_else(|| format!("query parameter `{n}` missing"))?,
                ),
            }
        }
        crate::hub::check_group_name(&out)
            .map_err(|e| format!("group `{out}` from `{}`: {e}", self.raw))?;
        Ok(out)
    }
}

impl fmt::Display for GroupTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> PathTemplate {
        PathTemplate::parse(raw, false).unwrap()
    }

    #[test]
    fn matches_params_and_prefixes() {
        let chat = t("/ws/chat/{room}/");
        assert_eq!(chat.matches("/ws/chat/lobby/").unwrap()["room"], "lobby");
        assert!(chat.matches("/ws/chat/lobby").is_none());
        assert!(chat.matches("/ws/chat//").is_none());
        assert!(chat.matches("/ws/chat/a/b/").is_none());
        let pre = t("/ws/*");
        assert!(pre.matches("/ws/anything/below").is_some());
        assert!(pre.matches("/ws").is_some());
        assert!(pre.matches("/other").is_none());
        assert!(PathTemplate::parse("/ws/{a}x/", false).is_err());
        assert!(PathTemplate::parse("ws/", false).is_err());
    }

    #[test]
    fn detects_overlaps() {
        assert!(t("/ws/chat/{room}/").overlaps(&t("/ws/chat/lobby/")));
        assert!(!t("/ws/chat/{room}/").overlaps(&t("/ws/news/{room}/")));
        assert!(t("/ws/*").overlaps(&t("/ws/chat/{room}/")));
        assert!(!t("/ws/chat/{room}/").overlaps(&t("/ws/chat/{room}/x/")));
    }

    #[test]
    fn renders_groups() {
        let g = GroupTemplate::parse("chat-{room}-{user}-{query.k}", &["room"]).unwrap();
        let mut v = Vars::default();
        v.params.insert("room".into(), "lobby".into());
        v.user = Some("5".into());
        v.query.insert("k".into(), "z".into());
        assert_eq!(g.render(&v).unwrap(), "chat-lobby-5-z");
        v.params.insert("room".into(), "bad room".into());
        assert!(g.render(&v).is_err());
        assert!(GroupTemplate::parse("chat-{nope}", &["room"])
            .unwrap_err()
            .contains("{room}"));
        assert!(GroupTemplate::parse("chat room", &[]).is_err());
    }
}
