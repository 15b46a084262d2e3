//! Authorization: the ACL (`--acl`, [`crate::acl`]) and the embedding
//! program's own verdicts ([`Authorizer`]), asked before a login, a
//! subscribe, a publish, a watch or a send takes effect. A refusal is
//! `ERR forbidden` and nothing of that command happens (all or nothing
//! across its groups); the session goes on, except after a refused login.
//!
//! The broker does not know who answers: the caller passes an
//! `&mut dyn Authorizer` with the input (the server passes its `Handler`),
//! and the broker asks it synchronously, on the loop.

use std::sync::Arc;

use log::warn;

use super::{Broker, Sessions};
use crate::acl::{Acl, Action};
use crate::conn::{CloseReason, ConnId};
use crate::error::ErrorCode;
use crate::proto::GroupId;

/// What a session is about to do, for an [`Authorizer`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Attempt<'a> {
    /// Log in (the user name is in [`Authorize::user`]).
    Login,
    /// `SUBSCRIBE` to these groups.
    Subscribe(&'a [GroupId]),
    /// `PUBLISH` this payload to these groups.
    Publish {
        /// The groups, as listed.
        groups: &'a [GroupId],
        /// The payload.
        payload: &'a [u8],
    },
    /// `WATCH` these groups.
    Watch(&'a [GroupId]),
    /// `REQUEST` or `SURVEY` this payload to a group (the ACL's `request`).
    Request {
        /// The group.
        group: &'a [GroupId],
        /// The payload.
        payload: &'a [u8],
    },
    /// `SEND` this payload to a user.
    Send {
        /// The recipient, as typed.
        to: &'a str,
        /// The payload.
        payload: &'a [u8],
    },
}

impl Attempt<'_> {
    /// The ACL action and groups this attempt needs, if the ACL covers it.
    fn acl_action(&self) -> Option<(Action, &[GroupId])> {
        match *self {
            Self::Login => None,
            Self::Subscribe(g) => Some((Action::Subscribe, g)),
            Self::Publish { groups, .. } => Some((Action::Publish, groups)),
            Self::Watch(g) => Some((Action::Watch, g)),
            Self::Send { .. } => Some((Action::Send, &[])),
            Self::Request { group, .. } => Some((Action::Request, group)),
        }
    }
}

/// A question to an [`Authorizer`]: who wants to do what.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Authorize<'a> {
    /// The connection.
    pub conn: ConnId,
    /// The user (for [`Attempt::Login`], the name it wants to log in as).
    pub user: &'a str,
    /// What it wants to do.
    pub attempt: Attempt<'a>,
}

/// An [`Authorizer`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Verdict {
    /// Go ahead.
    #[default]
    Allow,
    /// Refuse with `ERR forbidden`.
    Deny,
}

/// Decides, on the loop and at once, whether an attempt may go ahead (after
/// the ACL allowed it). Must not block.
pub trait Authorizer {
    /// The verdict on `request`.
    fn authorize(&mut self, request: &Authorize<'_>) -> Verdict;
}

/// Allows everything.
impl Authorizer for () {
    fn authorize(&mut self, _: &Authorize<'_>) -> Verdict {
        Verdict::Allow
    }
}

impl Broker {
    /// Replaces the ACL (`None`: everyone may do everything). Sessions keep
    /// what they have; the new rules apply to their next commands.
    pub fn set_acl(&mut self, acl: Option<Arc<Acl>>) {
        self.config.acl = acl;
    }

    /// The ACL in force.
    pub fn acl(&self) -> Option<&Arc<Acl>> {
        self.config.acl.as_ref()
    }

    /// Asks the ACL, then `authz`, whether the logged-in session `conn` may
    /// make `attempt`; if not, replies `ERR forbidden`. Whether it was refused.
    pub(super) fn forbidden<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        authz: &mut dyn Authorizer,
        attempt: Attempt<'_>,
    ) -> bool {
        let Some(user) = links.proto(conn).and_then(|s| s.name.as_deref()) else {
            return false;
        };
        let why = match (&self.config.acl, attempt.acl_action()) {
            (Some(acl), Some((action, groups))) => match acl.allows(user, action, groups) {
                Ok(()) => None,
                Err(Some(g)) => {
                    let to = if action == Action::Watch { "" } else { " to" };
                    Some(format!("{user} may not {action}{to} group {g}"))
                }
                Err(None) => Some(format!("{user} may not {action} messages")),
            },
            _ => None,
        };
        let why = why.or_else(|| {
            let request = Authorize {
                conn,
                user,
                attempt,
            };
            (authz.authorize(&request) == Verdict::Deny).then(|| "refused by the server".into())
        });
        let Some(why) = why else {
            return false;
        };
        warn!("{}: forbidden: {why}", links.log_peer(conn));
        self.reply_err(links, conn, ErrorCode::Forbidden, &why);
        true
    }

    /// Asks `authz` whether `conn` may log in as `user`; if not, sends
    /// `ERR forbidden` and closes. Whether it was refused.
    pub(super) fn login_forbidden<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        authz: &mut dyn Authorizer,
        user: &str,
    ) -> bool {
        let request = Authorize {
            conn,
            user,
            attempt: Attempt::Login,
        };
        if authz.authorize(&request) == Verdict::Allow {
            return false;
        }
        warn!(
            "{}: login refused for {user}: forbidden",
            links.log_peer(conn)
        );
        let text = format!("{user} may not log in");
        self.fail(
            links,
            conn,
            ErrorCode::Forbidden,
            &text,
            CloseReason::AuthFailed,
        );
        true
    }
}
