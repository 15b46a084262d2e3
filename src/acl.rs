//! Authorization rules (`--acl FILE`): which groups each user may subscribe
//! to, publish to, request and watch, and whether it may `SEND`. Sans-IO: the
//! text is parsed here; reading the file is the caller's.
//!
//! The format, one rule line per user (docs/protocol.md, "Access control"):
//!
//! ```text
//! # comment
//! default: subscribe 1-100 ; publish 1,2 ; watch * ; send yes
//! user alice: subscribe * ; publish * ; send yes
//! user bob, carol: publish none
//! ```
//!
//! - `default:` applies to every user without a line of its own, and fills
//!   in the actions a `user` line does not name. Without a `default:` line,
//!   an action nobody granted is refused.
//! - Actions: `subscribe`, `publish`, `request`, `watch` take a group set:
//!   `*` (every group), `none`, or a comma list of numbers and ranges
//!   (`1,2,10-20`); `send` takes `yes` or `no`.
//! - User names are compared case-insensitively, as on the wire.
//!
//! ```
//! use switchboard::acl::{Acl, Action};
//! let acl = Acl::parse("default: subscribe 1-10\nuser root: subscribe * ; send yes\n").unwrap();
//! assert!(acl.allows("anyone", Action::Subscribe, &[3]).is_ok());
//! assert_eq!(acl.allows("anyone", Action::Subscribe, &[3, 11]), Err(Some(11)));
//! assert!(acl.allows("ROOT", Action::Subscribe, &[11]).is_ok());
//! assert_eq!(acl.allows("anyone", Action::Send, &[]), Err(None));
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::proto::GroupId;
use crate::proto::command::is_valid_user;

/// What a session asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// `SUBSCRIBE` to groups.
    Subscribe,
    /// `PUBLISH` to groups.
    Publish,
    /// Send a request to groups (`REQUEST`, not implemented yet).
    Request,
    /// `WATCH` groups.
    Watch,
    /// `SEND` to a user.
    Send,
}

impl Action {
    /// The word used in the file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Request => "request",
            Self::Watch => "watch",
            Self::Send => "send",
        }
    }

    /// Every action.
    pub const ALL: [Self; 5] = [
        Self::Subscribe,
        Self::Publish,
        Self::Request,
        Self::Watch,
        Self::Send,
    ];

    fn from_word(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| word.eq_ignore_ascii_case(a.as_str()))
    }

    /// Index into [`Rules::sets`] for a group action.
    const fn slot(self) -> Option<usize> {
        match self {
            Self::Subscribe => Some(0),
            Self::Publish => Some(1),
            Self::Request => Some(2),
            Self::Watch => Some(3),
            Self::Send => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of groups: every group, or sorted, disjoint, non-adjacent ranges.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum GroupSet {
    /// `*`: every group.
    All,
    /// Inclusive ranges, sorted and merged; never empty.
    Ranges(Vec<(GroupId, GroupId)>),
    /// Nothing (`none`).
    #[default]
    None,
}

impl GroupSet {
    /// Whether `g` is in the set.
    pub fn contains(&self, g: GroupId) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Ranges(r) => {
                // The last range starting at or before g.
                let i = r.partition_point(|&(lo, _)| lo <= g);
                i > 0 && r.get(i - 1).is_some_and(|&(_, hi)| g <= hi)
            }
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::All);
        }
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        if text.is_empty() {
            return Err(
                "expected a group set (*, none, or numbers and ranges like 1,2,10-20)".into(),
            );
        }
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (group_number(lo)?, group_number(hi)?),
                None => {
                    let g = group_number(item)?;
                    (g, g)
                }
            };
            if lo > hi {
                return Err(format!("range {item} is backwards"));
            }
            ranges.push((lo, hi));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(GroupId, GroupId)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        if merged == [(1, GroupId::MAX)] {
            return Ok(Self::All);
        }
        Ok(Self::Ranges(merged))
    }
}

fn group_number(s: &str) -> Result<GroupId, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty item in a group list".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a group number"));
    }
    match s.parse::<GroupId>() {
        Ok(g) if g != 0 => Ok(g),
        _ => Err(format!(
            "{s} is not a group number (groups are 1 to {})",
            GroupId::MAX
        )),
    }
}

/// One user's (or the default) rights, every action resolved.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rules {
    /// Subscribe, publish, request, watch.
    sets: [GroupSet; 4],
    send: bool,
}

impl Rules {
    /// Whether `action` is allowed on every group of `groups` (for
    /// [`Action::Send`], whether sending is allowed; `groups` is ignored).
    /// The first group refused, if any.
    pub fn allows(&self, action: Action, groups: &[GroupId]) -> Result<(), Option<GroupId>> {
        let Some(slot) = action.slot() else {
            return if self.send { Ok(()) } else { Err(None) };
        };
        let set = self.sets.get(slot).unwrap_or(&GroupSet::None);
        match groups.iter().find(|&&g| !set.contains(g)) {
            Some(&g) => Err(Some(g)),
            None => Ok(()),
        }
    }

    /// The groups allowed for a group action (`None` for [`Action::Send`]).
    pub fn groups(&self, action: Action) -> Option<&GroupSet> {
        self.sets.get(action.slot()?)
    }
}

/// A rule line as written: only the actions it names.
#[derive(Clone, Debug, Default)]
struct Partial {
    sets: [Option<GroupSet>; 4],
    send: Option<bool>,
}

impl Partial {
    fn resolve(&self, base: &Rules) -> Rules {
        let mut out = base.clone();
        for (dst, src) in out.sets.iter_mut().zip(&self.sets) {
            if let Some(s) = src {
                dst.clone_from(s);
            }
        }
        if let Some(s) = self.send {
            out.send = s;
        }
        out
    }
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    default: Rules,
    /// By lower-case user name.
    users: HashMap<Box<str>, Rules>,
}

/// Why an ACL text was refused: the line (from 1) and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclError {
    /// The line number, counting from 1.
    pub line: usize,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for AclError {}

/// Longest user name (protocol.md 3.3).
const MAX_USER: usize = 64;

impl Acl {
    /// An ACL that allows everything to everyone (the same as no ACL).
    pub fn allow_all() -> Self {
        Self {
            default: Rules {
                sets: [GroupSet::All, GroupSet::All, GroupSet::All, GroupSet::All],
                send: true,
            },
            users: HashMap::new(),
        }
    }

    /// Parses the text of an ACL file.
    ///
    /// # Errors
    ///
    /// The first line that is wrong, and why.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut default: Option<Partial> = None;
        let mut users: Vec<(Box<str>, Partial)> = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let err = |reason: String| AclError { line, reason };
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let Some((head, body)) = content.split_once(':') else {
                return Err(err("expected `default: RULES` or `user NAME: RULES`".into()));
            };
            let rules = parse_rules(body).map_err(err)?;
            let head = head.trim();
            if head.eq_ignore_ascii_case("default") {
                if default.is_some() {
                    return Err(err("a second `default:` line".into()));
                }
                default = Some(rules);
                continue;
            }
            let names = match head.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((word, names)) if word.eq_ignore_ascii_case("user") => names,
                _ => {
                    return Err(err(format!(
                        "expected `default:` or `user NAME:`, not {:?}",
                        clip(head)
                    )));
                }
            };
            for name in names.split(',') {
                let name = name.trim();
                if !is_valid_user(name.as_bytes()) {
                    return Err(err(format!(
                        "{:?} is not a user name (1 to 64 of A-Z a-z 0-9 . _ -)",
                        clip(name)
                    )));
                }
                let folded: Box<str> = name.to_ascii_lowercase().into();
                if users.iter().any(|(u, _)| *u == folded) {
                    return Err(err(format!("user {name} has a line already")));
                }
                users.push((folded, rules.clone()));
            }
        }
        let default = default.unwrap_or_default().resolve(&Rules::default());
        let users = users
            .into_iter()
            .map(|(name, p)| {
                let rules = p.resolve(&default);
                (name, rules)
            })
            .collect();
        Ok(Self { default, users })
    }

    /// The rules that apply to `user`.
    pub fn rules(&self, user: &str) -> &Rules {
        if self.users.is_empty() || user.len() > MAX_USER {
            return &self.default;
        }
        let mut buf = [0u8; MAX_USER];
        let Some(folded) = buf.get_mut(..user.len()) else {
            return &self.default;
        };
        folded.copy_from_slice(user.as_bytes());
        folded.make_ascii_lowercase();
        std::str::from_utf8(folded)
            .ok()
            .and_then(|f| self.users.get(f))
            .unwrap_or(&self.default)
    }

    /// Whether `user` may do `action` on every group of `groups`; the first
    /// group refused (`None` for a refused `SEND`).
    ///
    /// # Errors
    ///
    /// The first group refused.
    pub fn allows(
        &self,
        user: &str,
        action: Action,
        groups: &[GroupId],
    ) -> Result<(), Option<GroupId>> {
        self.rules(user).allows(action, groups)
    }

    /// How many users have a line of their own.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

/// At most 40 characters of something quoted in an error.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `ACTION VALUE ; ACTION VALUE ...`
fn parse_rules(body: &str) -> Result<Partial, String> {
    let mut p = Partial::default();
    let mut any = false;
    for part in body.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (word, value) = part
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((part, ""));
        let Some(action) = Action::from_word(word) else {
            return Err(format!(
                "unknown action {:?} (subscribe, publish, request, watch, send)",
                clip(word)
            ));
        };
        let value = value.trim();
        match action.slot() {
            None => {
                if p.send.is_some() {
                    return Err("send is given twice on this line".into());
                }
                p.send = Some(match value.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(format!("send takes yes or no, not {:?}", clip(value))),
                });
            }
            Some(slot) => {
                let set = GroupSet::parse(value).map_err(|e| format!("{action}: {e}"))?;
                let Some(dst) = p.sets.get_mut(slot) else {
                    return Err(format!("{action}: no such action"));
                };
                if dst.is_some() {
                    return Err(format!("{action} is given twice on this line"));
                }
                *dst = Some(set);
            }
        }
        any = true;
    }
    if !any {
        return Err("no rules after the colon".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> AclError {
        Acl::parse(text).expect_err("should be refused")
    }

    #[test]
    fn the_example_parses_and_checks() {
        let acl = Acl::parse(
            "# comment\n\
             default: subscribe 1-100 ; publish 1,2 ; watch * ; send yes\n\
             \n\
             user alice: subscribe * ; publish *   # everything\n\
             user Bob, carol: send no ; publish none\n",
        )
        .unwrap();
        assert_eq!(acl.user_count(), 3);
        assert!(acl.allows("zed", Action::Subscribe, &[1, 50, 100]).is_ok());
        assert_eq!(
            acl.allows("zed", Action::Subscribe, &[5, 101]),
            Err(Some(101))
        );
        assert!(acl.allows("zed", Action::Publish, &[2, 1]).is_ok());
        assert_eq!(acl.allows("zed", Action::Publish, &[3]), Err(Some(3)));
        assert!(acl.allows("zed", Action::Watch, &[u32::MAX]).is_ok());
        assert_eq!(acl.allows("zed", Action::Request, &[1]), Err(Some(1)));
        assert!(acl.allows("zed", Action::Send, &[]).is_ok());
        // alice: her own subscribe and publish; watch and send from default.
        assert!(acl.allows("ALICE", Action::Subscribe, &[7_000]).is_ok());
        assert!(acl.allows("alice", Action::Publish, &[7_000]).is_ok());
        assert!(acl.allows("alice", Action::Send, &[]).is_ok());
        // bob and carol
        assert_eq!(acl.allows("bob", Action::Send, &[]), Err(None));
        assert_eq!(acl.allows("CAROL", Action::Publish, &[1]), Err(Some(1)));
        assert!(acl.allows("carol", Action::Subscribe, &[1]).is_ok());
        // An empty group list asks for nothing.
        assert!(acl.allows("carol", Action::Publish, &[]).is_ok());
    }

    #[test]
    fn without_a_default_nothing_is_granted() {
        let acl = Acl::parse("user a: publish 5\n").unwrap();
        assert_eq!(acl.allows("b", Action::Publish, &[5]), Err(Some(5)));
        assert_eq!(acl.allows("b", Action::Send, &[]), Err(None));
        assert_eq!(acl.allows("a", Action::Subscribe, &[5]), Err(Some(5)));
        assert!(acl.allows("a", Action::Publish, &[5]).is_ok());
        let empty = Acl::parse("# nothing\n\n").unwrap();
        assert_eq!(empty.allows("x", Action::Watch, &[1]), Err(Some(1)));
        let all = Acl::allow_all();
        assert!(all.allows("x", Action::Request, &[1, u32::MAX]).is_ok());
        assert!(all.allows("x", Action::Send, &[]).is_ok());
    }

    #[test]
    fn group_sets_merge_and_look_up() {
        let set = GroupSet::parse(" 10-20, 1 ,2,3, 15-30,32 ").unwrap();
        assert_eq!(set, GroupSet::Ranges(vec![(1, 3), (10, 30), (32, 32)]));
        for (g, inside) in [(1, true), (3, true), (4, false), (9, false), (10, true)] {
            assert_eq!(set.contains(g), inside, "{g}");
        }
        for (g, inside) in [(30, true), (31, false), (32, true), (33, false)] {
            assert_eq!(set.contains(g), inside, "{g}");
        }
        assert_eq!(GroupSet::parse("1-4294967295").unwrap(), GroupSet::All);
        assert_eq!(GroupSet::parse("NONE").unwrap(), GroupSet::None);
        assert!(!GroupSet::None.contains(1));
        let max = GroupSet::parse("4294967295").unwrap();
        assert!(max.contains(u32::MAX) && !max.contains(u32::MAX - 1));
        // Adjacent ranges merge; the end of u32 does not overflow.
        assert_eq!(
            GroupSet::parse("5-6,7-8,4294967290-4294967295").unwrap(),
            GroupSet::Ranges(vec![(5, 8), (4_294_967_290, u32::MAX)])
        );
    }

    #[test]
    fn every_error_names_its_line_and_reason() {
        let cases: &[(&str, usize, &str)] = &[
            ("subscribe 1", 1, "expected `default: RULES`"),
            (
                "\n\ngroup x: subscribe 1",
                3,
                "expected `default:` or `user NAME:`",
            ),
            (
                "user: subscribe 1",
                1,
                "expected `default:` or `user NAME:`",
            ),
            ("user bad!name: send yes", 1, "is not a user name"),
            ("user a,,b: send yes", 1, "is not a user name"),
            (
                "user a: send yes\nuser A: send no",
                2,
                "user A has a line already",
            ),
            (
                "default: send yes\ndefault: send no",
                2,
                "a second `default:` line",
            ),
            ("default:", 1, "no rules after the colon"),
            ("default: ; ;", 1, "no rules after the colon"),
            ("default: shout 1", 1, "unknown action \"shout\""),
            ("default: send maybe", 1, "send takes yes or no"),
            ("default: send", 1, "send takes yes or no"),
            ("default: send yes; send no", 1, "send is given twice"),
            ("default: publish 1; publish 2", 1, "publish is given twice"),
            ("default: publish", 1, "publish: expected a group set"),
            ("default: watch 0", 1, "watch: 0 is not a group number"),
            ("default: watch 4294967296", 1, "is not a group number"),
            ("default: watch 1,x", 1, "\"x\" is not a group number"),
            ("default: watch 1,,2", 1, "empty item in a group list"),
            ("default: watch 5-", 1, "empty item"),
            ("default: watch 9-3", 1, "range 9-3 is backwards"),
            ("default: watch 1-2-3", 1, "\"2-3\" is not a group number"),
            ("default: watch +5", 1, "\"+5\" is not a group number"),
            ("default: request * none", 1, "is not a group number"),
        ];
        for &(text, line, needle) in cases {
            let e = err_of(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(needle), "{text:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{text:?}: one line");
        }
    }

    #[test]
    fn lines_comments_and_case_are_forgiving() {
        let acl = Acl::parse(
            "\r\n  DEFAULT :  Subscribe * ; SEND Yes ;  \r\n\tUSER  x.y_z-1 : publish 3 # c: d\r\n",
        )
        .unwrap();
        assert!(acl.allows("X.Y_Z-1", Action::Publish, &[3]).is_ok());
        assert!(acl.allows("X.Y_Z-1", Action::Subscribe, &[9]).is_ok());
        assert!(acl.allows("other", Action::Send, &[]).is_ok());
        // Names too long for the protocol get the default.
        let long = "a".repeat(65);
        assert!(acl.allows(&long, Action::Subscribe, &[1]).is_ok());
        assert_eq!(acl.allows(&long, Action::Publish, &[3]), Err(Some(3)));
    }

    /// No input makes the parser panic: random bytes, random mixes of the
    /// format's own tokens, and every prefix of a valid file.
    #[test]
    fn no_input_panics() {
        let good = "default: subscribe 1-100 ; publish 1,2 ; watch * ; send yes\n\
                    user alice, bob: subscribe * ; request none # x\n";
        for end in 0..=good.len() {
            if let Some(prefix) = good.get(..end) {
                let _ = Acl::parse(prefix);
            }
        }
        let tokens: &[&str] = &[
            "default",
            "user",
            ":",
            ";",
            ",",
            "-",
            "*",
            "none",
            "#",
            "\n",
            " ",
            "\r",
            "\t",
            "subscribe",
            "publish",
            "request",
            "watch",
            "send",
            "yes",
            "no",
            "0",
            "1",
            "4294967295",
            "4294967296",
            "99999999999999999999",
            "a",
            "é",
            "\u{0}",
            "ß",
            "K",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(next() % 24) {
                if next() % 4 == 0 {
                    let bytes: Vec<u8> = (0..(next() % 6)).map(|_| next() as u8).collect();
                    text.push_str(&String::from_utf8_lossy(&bytes));
                } else {
                    let i = usize::try_from(next() % tokens.len() as u64).unwrap_or(0);
                    text.push_str(tokens.get(i).copied().unwrap_or(""));
                }
            }
            if let Ok(acl) = Acl::parse(&text) {
                for user in ["alice", "ALICE", "", "é", "a", "K"] {
                    for a in Action::ALL {
                        let _ = acl.allows(user, a, &[0, 1, 2, u32::MAX]);
                    }
                }
            }
        }
    }
}
