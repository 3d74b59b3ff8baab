//! Who may do what: roles, the access each route needs, and token scopes.

use std::fmt;

/// A token's role. `reader` < `publisher` < `deployer` < `admin`, each
/// including the ones before it; `engine` reads and reports status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Publisher,
    Deployer,
    Admin,
    Engine,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Publish,
    Deploy,
    Report,
    Admin,
}

impl Access {
    /// The role name the OpenAPI document declares for the route.
    pub fn role_name(self) -> &'static str {
        match self {
            Self::Read => "reader",
            Self::Publish => "publisher",
            Self::Deploy => "deployer",
            Self::Report => "engine",
            Self::Admin => "admin",
        }
    }
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Publisher => "publisher",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
            Self::Engine => "engine",
        }
    }

    pub fn grants(self, access: Access) -> bool {
        let rank = |r: Role| match r {
            Role::Reader | Role::Engine => 0,
            Role::Publisher => 1,
            Role::Deployer => 2,
            Role::Admin => 3,
        };
        match access {
            Access::Read => true,
            Access::Publish => rank(self) >= 1 && self != Role::Engine,
            Access::Deploy => rank(self) >= 2,
            Access::Report => matches!(self, Role::Engine | Role::Admin),
            Access::Admin => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which deployments a token may see: empty lists mean no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub organizations: Vec<String>,
    /// Glob patterns: `*` any run of characters (`/` included), `?` one.
    pub selectors: Vec<String>,
}

impl Scope {
    pub fn is_unlimited(&self) -> bool {
        self.organizations.is_empty() && self.selectors.is_empty()
    }

    pub fn allows_selector(&self, selector: &str) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|p| glob(p, selector))
    }

    pub fn allows_organization(&self, organization: Option<&str>) -> bool {
        self.organizations.is_empty()
            || organization.is_some_and(|o| self.organizations.iter().any(|a| a == o))
    }

    pub fn allows(&self, selector: &str, organization: Option<&str>) -> bool {
        self.allows_selector(selector) && self.allows_organization(organization)
    }
}

/// `*` and `?` glob matching, linear in practice (greedy with backtracking to the last star).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them() {
        use Access::*;
        let table = [
            (Role::Reader, [true, false, false, false, false]),
            (Role::Publisher, [true, true, false, false, false]),
            (Role::Deployer, [true, true, true, false, false]),
            (Role::Admin, [true, true, true, true, true]),
            (Role::Engine, [true, false, false, true, false]),
        ];
        for (role, expected) in table {
            let got = [Read, Publish, Deploy, Report, Admin].map(|a| role.grants(a));
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn globs_match_selectors() {
        assert!(glob("prod/*", "prod/eu/west"));
        assert!(glob("*", ""));
        assert!(glob("?rod", "prod"));
        assert!(glob("*-eu-*", "prod-eu-1"));
        assert!(!glob("prod/*", "staging/eu"));
        assert!(!glob("prod", "prod2"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn scopes_limit_selectors_and_organizations() {
        let scope = Scope { organizations: vec!["acme".into()], selectors: vec!["prod/*".into()] };
        assert!(scope.allows("prod/eu", Some("acme")));
        assert!(!scope.allows("prod/eu", Some("other")));
        assert!(!scope.allows("prod/eu", None));
        assert!(!scope.allows("dev", Some("acme")));
        assert!(Scope::default().allows("anything", None));
    }
}
