//! The SCIM `Group` resource: a named set of the account's users, stored as
//! a document (`DocSpace::Group`, key `{account}/{id}`).
//!
//! A user's groups feed the account's mapping rules: each member's record
//! keeps the names of its groups (`scim.groups`), and the rules see them as
//! values of the attributes the mapping reads groups from (and of
//! `groups`), at every membership change and at every login; a rule that
//! matches can grant the licensed type.

use std::collections::{BTreeSet, HashMap};

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::filter::{self, get_ci};
use super::{Ctx, ListQuery, Result, ScimError, check_if_match, list_page, resource, user};
use crate::mapping::License;
use crate::server::Body;
use crate::store::{DocSpace, UserRecord};

/// The core Group schema.
pub const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Most members of one group.
pub const MAX_MEMBERS: usize = 10_000;
/// Most groups of one account.
pub const MAX_GROUPS: usize = 10_000;

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user's SCIM id.
    pub value: String,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDoc {
    /// SCIM id.
    pub id: String,
    /// `displayName`.
    pub display_name: String,
    /// `externalId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Members (users of the account), in the order added.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Last change, RFC 3339.
    pub last_modified: String,
}

fn key(account: &str, id: &str) -> String {
    format!("{account}/{id}")
}

fn version(g: &GroupDoc) -> String {
    let d = openssl::sha::sha256(&serde_json::to_vec(g).unwrap_or_default());
    let h: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{h}\"")
}

/// The group as a SCIM resource; `names` gives members' display names (a
/// response: members whose user is gone are left out), `None` every member
/// as stored.
fn render(g: &GroupDoc, base: &str, names: Option<&HashMap<String, String>>) -> Value {
    let mut o = Map::new();
    o.insert("schemas".into(), json!([SCHEMA]));
    o.insert("id".into(), json!(g.id));
    if let Some(x) = &g.external_id {
        o.insert("externalId".into(), json!(x));
    }
    o.insert("displayName".into(), json!(g.display_name));
    // With names (a response): members whose user is gone (deleted
    // through another door) are left out.
    let members: Vec<Value> = g
        .members
        .iter()
        .filter(|m| names.is_none_or(|n| n.contains_key(&m.value)))
        .map(|m| {
            let mut v = json!({
                "value": m.value,
                "$ref": format!("{base}/Users/{}", m.value),
                "type": "User",
            });
            if let (Some(n), Some(obj)) = (names.and_then(|n| n.get(&m.value)), v.as_object_mut()) {
                obj.insert("display".into(), json!(n));
            }
            v
        })
        .collect();
    o.insert("members".into(), Value::Array(members));
    o.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": g.created,
            "lastModified": g.last_modified,
            "location": format!("{base}/Groups/{}", g.id),
            "version": version(g),
        }),
    );
    Value::Object(o)
}

/// Every group of the account (bounded by [`MAX_GROUPS`]).
async fn all(ctx: &Ctx<'_>) -> Result<Vec<GroupDoc>> {
    let prefix = format!("{}/", ctx.acct.id);
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ctx
            .store
            .list_docs(DocSpace::Group, &prefix, after.as_deref(), 500)
            .await?;
        let n = page.len();
        for (k, v) in page {
            after = Some(k);
            if let Ok(g) = serde_json::from_slice::<GroupDoc>(&v) {
                out.push(g);
            }
        }
        if n < 500 || out.len() >= MAX_GROUPS {
            return Ok(out);
        }
    }
}

async fn get_doc(ctx: &Ctx<'_>, id: &str) -> Result<GroupDoc> {
    if id.is_empty() || id.len() > 128 || id.contains('/') {
        return Err(ScimError::not_found("group"));
    }
    let raw = ctx
        .store
        .get_doc(DocSpace::Group, &key(&ctx.acct.id, id))
        .await?
        .ok_or_else(|| ScimError::not_found("group"))?;
    serde_json::from_slice(&raw)
        .map_err(|e| ScimError::status(500, format!("the stored group {id} is unreadable: {e}")))
}

/// `{value, display, $ref}` of each group `user_id` is a member of.
pub async fn groups_of(ctx: &Ctx<'_>, user_id: &str) -> Result<Vec<Value>> {
    Ok(all(ctx)
        .await?
        .iter()
        .filter(|g| g.members.iter().any(|m| m.value == user_id))
        .map(|g| group_ref(g, &ctx.base))
        .collect())
}

fn group_ref(g: &GroupDoc, base: &str) -> Value {
    json!({
        "value": g.id,
        "display": g.display_name,
        "$ref": format!("{base}/Groups/{}", g.id),
        "type": "direct",
    })
}

/// User id → its groups' references (for filtering users by group).
pub async fn memberships(ctx: &Ctx<'_>) -> Result<HashMap<String, Vec<Value>>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for g in all(ctx).await? {
        for m in &g.members {
            out.entry(m.value.clone())
                .or_default()
                .push(group_ref(&g, &ctx.base));
        }
    }
    Ok(out)
}

/// Display names (emails) of the given user ids that exist in the account.
async fn member_names(ctx: &Ctx<'_>, ids: &[String]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for id in ids {
        if let Some(email) = ctx.store.get_doc(DocSpace::ScimUser, id).await? {
            out.insert(id.clone(), String::from_utf8_lossy(&email).into_owned());
        }
    }
    Ok(out)
}

/// What a Group body says.
struct GroupInput {
    display_name: String,
    external_id: Option<String>,
    members: Option<Vec<Member>>,
}

fn read(body: &Value) -> Result<GroupInput> {
    if !body.is_object() {
        return Err(ScimError::bad(
            "invalidSyntax",
            "the body must be a JSON object",
        ));
    }
    let display_name = match get_ci(body, "displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(ScimError::bad("invalidValue", "displayName is required")),
    };
    if display_name.chars().count() > user::MAX_TEXT || display_name.chars().any(char::is_control) {
        return Err(ScimError::bad(
            "invalidValue",
            "displayName is too long or has control characters",
        ));
    }
    let external_id = match get_ci(body, "externalId") {
        Some(Value::String(s)) if s.len() <= user::MAX_TEXT => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ScimError::bad(
                "invalidValue",
                "externalId must be a short string",
            ));
        }
    };
    let members = match get_ci(body, "members") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            if a.len() > MAX_MEMBERS {
                return Err(ScimError::bad(
                    "invalidValue",
                    format!("more than {MAX_MEMBERS} members"),
                ));
            }
            let mut seen = BTreeSet::new();
            let mut out = Vec::with_capacity(a.len());
            for m in a {
                let Some(v) = get_ci(m, "value").and_then(Value::as_str) else {
                    return Err(ScimError::bad(
                        "invalidValue",
                        "each member needs a value (a user id)",
                    ));
                };
                if seen.insert(v.to_owned()) {
                    out.push(Member {
                        value: v.to_owned(),
                    });
                }
            }
            Some(out)
        }
        Some(_) => return Err(ScimError::bad("invalidValue", "members must be an array")),
    };
    Ok(GroupInput {
        display_name,
        external_id,
        members,
    })
}

/// 400 unless every member is a user of this account.
async fn check_members(ctx: &Ctx<'_>, members: &[Member]) -> Result<()> {
    for m in members {
        if super::user_by_id(ctx, &m.value).await.is_err() {
            return Err(ScimError::bad(
                "invalidValue",
                format!("member {} is not a user of this account", m.value),
            ));
        }
    }
    Ok(())
}

/// 409 when another group of the account has this displayName.
async fn check_unique(ctx: &Ctx<'_>, name: &str, except: Option<&str>) -> Result<()> {
    let clash = all(ctx)
        .await?
        .into_iter()
        .any(|g| g.display_name.eq_ignore_ascii_case(name) && Some(g.id.as_str()) != except);
    if clash {
        return Err(super::conflict("a group with this displayName exists"));
    }
    Ok(())
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    // A version-4 UUID.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    )
}

async fn respond(ctx: &Ctx<'_>, g: &GroupDoc, status: StatusCode) -> Result<Response<Body>> {
    let ids: Vec<String> = g.members.iter().map(|m| m.value.clone()).collect();
    let names = member_names(ctx, &ids).await?;
    Ok(resource(status, &render(g, &ctx.base, Some(&names))))
}

/// POST /Groups.
pub async fn create(ctx: &Ctx<'_>, body: &Value) -> Result<Response<Body>> {
    let input = read(body)?;
    let members = input.members.unwrap_or_default();
    check_members(ctx, &members).await?;
    check_unique(ctx, &input.display_name, None).await?;
    if all(ctx).await?.len() >= MAX_GROUPS {
        return Err(ScimError::bad(
            "invalidValue",
            format!("the account has {MAX_GROUPS} groups already"),
        ));
    }
    let now = ctx.clock.now().to_rfc3339();
    let g = GroupDoc {
        id: new_id(),
        display_name: input.display_name,
        external_id: input.external_id,
        members,
        created: now.clone(),
        last_modified: now,
    };
    let json = serde_json::to_vec(&g).unwrap_or_default();
    if !ctx
        .store
        .put_doc(DocSpace::Group, &key(&ctx.acct.id, &g.id), &json, true)
        .await?
    {
        return Err(super::conflict("a group with this id exists"));
    }
    let touched: Vec<String> = g.members.iter().map(|m| m.value.clone()).collect();
    sync_members(ctx, &touched).await?;
    tracing::info!(target: "audit", event = "group_created", source = "scim", account = %ctx.acct.id, group = %g.display_name, scim_id = %g.id, members = g.members.len());
    respond(ctx, &g, StatusCode::CREATED).await
}

/// GET /Groups/{id}.
pub async fn get(
    ctx: &Ctx<'_>,
    id: &str,
    attributes: &[String],
    excluded: &[String],
) -> Result<Response<Body>> {
    let g = get_doc(ctx, id).await?;
    let ids: Vec<String> = g.members.iter().map(|m| m.value.clone()).collect();
    let names = member_names(ctx, &ids).await?;
    let v = user::project(render(&g, &ctx.base, Some(&names)), attributes, excluded);
    Ok(resource(StatusCode::OK, &v))
}

/// GET /Groups (filter, paging).
pub async fn list(ctx: &Ctx<'_>, q: &ListQuery) -> Result<Response<Body>> {
    let groups = all(ctx).await?;
    let mut total = 0usize;
    let mut page = Vec::new();
    let first = q.start.saturating_sub(1);
    for g in &groups {
        let v = render(g, &ctx.base, None);
        if q.filter.as_ref().is_none_or(|f| filter::matches(f, &v)) {
            if total >= first && page.len() < q.count {
                page.push(g.clone());
            }
            total += 1;
        }
    }
    let mut resources = Vec::with_capacity(page.len());
    for g in &page {
        let ids: Vec<String> = g.members.iter().map(|m| m.value.clone()).collect();
        let names = member_names(ctx, &ids).await?;
        resources.push(user::project(
            render(g, &ctx.base, Some(&names)),
            &q.attributes,
            &q.excluded,
        ));
    }
    Ok(super::scim_json(
        StatusCode::OK,
        &list_page(total, q.start, resources),
    ))
}

/// Stores `g` (replacing `old`) and re-syncs the members whose groups
/// changed.
async fn store_change(ctx: &Ctx<'_>, old: &GroupDoc, mut g: GroupDoc) -> Result<GroupDoc> {
    g.last_modified = ctx.clock.now().to_rfc3339();
    let json = serde_json::to_vec(&g).unwrap_or_default();
    ctx.store
        .put_doc(DocSpace::Group, &key(&ctx.acct.id, &g.id), &json, false)
        .await?;
    let before: BTreeSet<&str> = old.members.iter().map(|m| m.value.as_str()).collect();
    let after: BTreeSet<&str> = g.members.iter().map(|m| m.value.as_str()).collect();
    let touched: Vec<String> = if old.display_name != g.display_name {
        before.union(&after).map(|s| (*s).to_owned()).collect()
    } else {
        before
            .symmetric_difference(&after)
            .map(|s| (*s).to_owned())
            .collect()
    };
    sync_members(ctx, &touched).await?;
    tracing::info!(target: "audit", event = "group_updated", source = "scim", account = %ctx.acct.id, group = %g.display_name, scim_id = %g.id, members = g.members.len(), users_changed = touched.len());
    Ok(g)
}

/// PUT /Groups/{id}.
pub async fn replace(
    ctx: &Ctx<'_>,
    id: &str,
    body: &Value,
    want: Option<&str>,
) -> Result<Response<Body>> {
    let old = get_doc(ctx, id).await?;
    check_if_match(want, &version(&old))?;
    let input = read(body)?;
    if get_ci(body, "id")
        .and_then(Value::as_str)
        .is_some_and(|i| i != id)
    {
        return Err(ScimError::bad("mutability", "id cannot be changed"));
    }
    if !input.display_name.eq_ignore_ascii_case(&old.display_name) {
        check_unique(ctx, &input.display_name, Some(id)).await?;
    }
    let members = input.members.unwrap_or_default();
    check_members(ctx, &members).await?;
    let mut g = old.clone();
    g.display_name = input.display_name;
    g.external_id = input.external_id;
    g.members = members;
    let g = store_change(ctx, &old, g).await?;
    respond(ctx, &g, StatusCode::OK).await
}

/// PATCH /Groups/{id}: `members` add/remove (with or without a value
/// filter), `displayName`, `externalId`.
pub async fn patch(
    ctx: &Ctx<'_>,
    id: &str,
    body: &Value,
    want: Option<&str>,
) -> Result<Response<Body>> {
    let old = get_doc(ctx, id).await?;
    check_if_match(want, &version(&old))?;
    let mut v = render(&old, &ctx.base, None);
    // Members as bare `{value}` so a value filter sees what was sent.
    if let Some(Value::Array(ms)) = v.get_mut("members") {
        for m in ms.iter_mut() {
            if let Some(val) = m.get("value").cloned() {
                *m = json!({ "value": val });
            }
        }
    }
    user::apply_patch(&mut v, body, &["members"])?;
    let input = read(&v)?;
    if !input.display_name.eq_ignore_ascii_case(&old.display_name) {
        check_unique(ctx, &input.display_name, Some(id)).await?;
    }
    let members = input.members.unwrap_or_default();
    // Only the members added need checking.
    let known: BTreeSet<&str> = old.members.iter().map(|m| m.value.as_str()).collect();
    let added: Vec<Member> = members
        .iter()
        .filter(|m| !known.contains(m.value.as_str()))
        .cloned()
        .collect();
    check_members(ctx, &added).await?;
    let mut g = old.clone();
    g.display_name = input.display_name;
    g.external_id = input.external_id;
    g.members = members;
    let g = store_change(ctx, &old, g).await?;
    respond(ctx, &g, StatusCode::OK).await
}

/// DELETE /Groups/{id}.
pub async fn delete(ctx: &Ctx<'_>, id: &str, want: Option<&str>) -> Result<Response<Body>> {
    let old = get_doc(ctx, id).await?;
    check_if_match(want, &version(&old))?;
    ctx.store
        .delete_doc(DocSpace::Group, &key(&ctx.acct.id, id))
        .await?;
    let touched: Vec<String> = old.members.iter().map(|m| m.value.clone()).collect();
    sync_members(ctx, &touched).await?;
    tracing::info!(target: "audit", event = "group_deleted", source = "scim", account = %ctx.acct.id, group = %old.display_name, scim_id = %id);
    let mut r = Response::new(crate::server::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// Takes a deleted user out of every group.
pub async fn remove_member_everywhere(ctx: &Ctx<'_>, user_id: &str) -> Result<()> {
    for g in all(ctx).await? {
        if g.members.iter().any(|m| m.value == user_id) {
            let mut n = g.clone();
            n.members.retain(|m| m.value != user_id);
            n.last_modified = ctx.clock.now().to_rfc3339();
            let json = serde_json::to_vec(&n).unwrap_or_default();
            ctx.store
                .put_doc(DocSpace::Group, &key(&ctx.acct.id, &n.id), &json, false)
                .await?;
        }
    }
    Ok(())
}

/// Re-derives the directory groups (and what the mapping rules make of
/// them) of each of these users.
async fn sync_members(ctx: &Ctx<'_>, user_ids: &[String]) -> Result<()> {
    if user_ids.is_empty() {
        return Ok(());
    }
    let groups = all(ctx).await?;
    for id in user_ids {
        let Ok(mut u) = super::user_by_id(ctx, id).await else {
            continue;
        };
        let names: Vec<String> = groups
            .iter()
            .filter(|g| g.members.iter().any(|m| &m.value == id))
            .map(|g| g.display_name.clone())
            .collect();
        let before = u.clone();
        apply_directory_groups(ctx, &mut u, names);
        if u != before {
            u.updated_at = ctx.clock.now().to_rfc3339();
            if u.license == License::Licensed && u.vanity.is_none() {
                crate::provisioning::assign_vanities(ctx.store, std::slice::from_mut(&mut u))
                    .await?;
            }
            ctx.store.put_users(std::slice::from_ref(&u)).await?;
            tracing::info!(target: "audit", event = "user_groups_changed", source = "scim", account = %ctx.acct.id, email = %u.email, groups = ?u.scim.as_ref().map(|s| &s.groups), license = u.license.as_str());
        }
    }
    Ok(())
}

/// Sets `u`'s directory groups to `names` and applies what the account's
/// mapping rules make of them: the groups stand in `u.groups`, and a
/// license a matching rule grants replaces the user's (a license granted
/// this way falls back to the default when no group grants it any more).
pub fn apply_directory_groups(ctx: &Ctx<'_>, u: &mut UserRecord, names: Vec<String>) {
    let mut fields = u.scim.clone().unwrap_or_default();
    let old = std::mem::take(&mut fields.groups);
    let outcome = ctx.acct.mapping.directory_outcome(&names);
    // Platform groups: the old directory groups (and what rules added for
    // them) out, the new ones in; groups from logins stay.
    let old_outcome = ctx.acct.mapping.directory_outcome(&old);
    u.groups
        .retain(|g| !old.contains(g) && !old_outcome.groups.contains(g));
    for g in names.iter().chain(outcome.groups.iter()) {
        if !u.groups.contains(g) {
            u.groups.push(g.clone());
        }
    }
    for f in &outcome.features {
        if !u.features.contains(f) {
            u.features.push(f.clone());
        }
    }
    match outcome.license {
        Some(l) => {
            u.license = l;
            fields.license_from_groups = true;
        }
        None if fields.license_from_groups => {
            u.license = ctx.acct.mapping.default_license;
            fields.license_from_groups = false;
        }
        None => {}
    }
    fields.groups = names;
    u.scim = Some(fields);
}
