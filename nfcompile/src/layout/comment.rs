//! The comment of a dispatch element: which service port a frontend belongs to, and as what —
//! `default/web:http` (its cluster IP), `default/web:http external` (an external or
//! load-balancer IP), `default/web:http nodeport`. The port name is left out for a service's
//! only, unnamed port. `plan` reads it back to name what changes.

use std::fmt;

use super::chains::Role;

/// A dispatch element's comment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrontendComment {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// The service port's name; empty for an unnamed port.
    pub port: String,
    /// The frontend's kind.
    pub role: Role,
}

impl FrontendComment {
    /// Read a comment written by `Display`; `None` for anything else.
    pub fn parse(comment: &str) -> Option<FrontendComment> {
        let (id, role) = match comment.split_once(' ') {
            None => (comment, Role::ClusterIp),
            Some((id, "external")) => (id, Role::External),
            Some((id, "nodeport")) => (id, Role::NodePort),
            Some(_) => return None,
        };
        let (namespace, rest) = id.split_once('/')?;
        let (name, port) = rest.split_once(':').unwrap_or((rest, ""));
        if namespace.is_empty() || name.is_empty() || (rest.contains(':') && port.is_empty()) {
            return None;
        }
        Some(FrontendComment {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
            role,
        })
    }

    /// The comment of a frontend of port `port` (empty: unnamed) of service `namespace/name`,
    /// written without building a [`FrontendComment`] (the lowering writes one per frontend).
    pub fn format(namespace: &str, name: &str, port: &str, role: Role) -> String {
        let suffix = match role {
            Role::ClusterIp => "",
            Role::External => " external",
            Role::NodePort => " nodeport",
        };
        let mut out =
            String::with_capacity(namespace.len() + name.len() + port.len() + suffix.len() + 2);
        out.push_str(namespace);
        out.push('/');
        out.push_str(name);
        if !port.is_empty() {
            out.push(':');
            out.push_str(port);
        }
        out.push_str(suffix);
        out
    }

    /// `namespace/name`.
    pub fn service(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for FrontendComment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&FrontendComment::format(
            &self.namespace,
            &self.name,
            &self.port,
            self.role,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_comments_read_back_as_what_they_were_made_of() {
        for port in ["", "http", "dns-udp"] {
            for role in [Role::ClusterIp, Role::External, Role::NodePort] {
                let c = FrontendComment {
                    namespace: "kube-system".into(),
                    name: "kube-dns".into(),
                    port: port.into(),
                    role,
                };
                let text = c.to_string();
                assert_eq!(FrontendComment::parse(&text), Some(c), "{text}");
            }
        }
        let c = FrontendComment::parse("default/web:http external").unwrap();
        assert_eq!(
            (c.service().as_str(), c.port.as_str()),
            ("default/web", "http")
        );
        for other in [
            "",
            "web",
            "default/",
            "/web",
            "default/web:",
            "default/web other",
        ] {
            assert_eq!(FrontendComment::parse(other), None, "{other}");
        }
    }
}
