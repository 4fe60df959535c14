//! The SCIM `Group` resource: a named set of the account's users, stored as
//! a document (`DocSpace::Group`, key `{account}/g/{id}`), its name claimed
//! in the same space (`{account}/n/{lowercased name}` → id: unique per
//! account, atomically).
//!
//! Each member's record keeps its groups' ids and names (`scim.group_ids`,
//! `scim.groups`), so a user is shown, filtered and signed in without
//! reading any group; a membership change updates only the users it
//! touches. The names feed the account's mapping rules: the rules see them
//! as values of the attributes the mapping reads groups from (and of
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
    format!("{account}/g/{id}")
}

fn name_key(account: &str, name: &str) -> String {
    format!("{account}/n/{}", name.to_lowercase())
}

fn version(g: &GroupDoc) -> String {
    super::weak_etag(&serde_json::to_vec(g).unwrap_or_default())
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
    let prefix = format!("{}/g/", ctx.acct.id);
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

/// `{value, display, $ref}` of each group `u` is a member of (from its
/// record).
pub fn groups_of(u: &UserRecord, base: &str) -> Vec<Value> {
    let Some(f) = &u.scim else {
        return Vec::new();
    };
    f.group_ids
        .iter()
        .zip(&f.groups)
        .map(|(id, name)| {
            json!({
                "value": id,
                "display": name,
                "$ref": format!("{base}/Groups/{id}"),
                "type": "direct",
            })
        })
        .collect()
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

/// Claims `name` for group `id` (409 when another group of the account
/// has it; case-insensitive).
async fn claim_name(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<()> {
    let k = name_key(&ctx.acct.id, name);
    if ctx
        .store
        .put_doc(DocSpace::Group, &k, id.as_bytes(), true)
        .await?
    {
        return Ok(());
    }
    // Taken: by this group (a retry), by a group that is gone (a crash
    // between the writes), or by another.
    let owner = ctx.store.get_doc(DocSpace::Group, &k).await?;
    let owner = owner.map(|o| String::from_utf8_lossy(&o).into_owned());
    match owner {
        Some(o) if o == id => Ok(()),
        Some(o) if get_doc(ctx, &o).await.is_err() => {
            ctx.store
                .put_doc(DocSpace::Group, &k, id.as_bytes(), false)
                .await?;
            Ok(())
        }
        _ => Err(super::conflict("a group with this displayName exists")),
    }
}

/// Gives `name` back if group `id` holds it.
async fn release_name(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<()> {
    let k = name_key(&ctx.acct.id, name);
    if ctx
        .store
        .get_doc(DocSpace::Group, &k)
        .await?
        .is_some_and(|o| o == id.as_bytes())
    {
        ctx.store.delete_doc(DocSpace::Group, &k).await?;
    }
    Ok(())
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    // A version-4 UUID.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    super::uuid_form(&b)
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
    let prefix = format!("{}/g/", ctx.acct.id);
    let after = ctx
        .store
        .list_docs(DocSpace::Group, &prefix, None, MAX_GROUPS)
        .await?;
    if after.len() >= MAX_GROUPS {
        return Err(ScimError::bad(
            "invalidValue",
            format!("the account has {MAX_GROUPS} groups already"),
        ));
    }
    let id = new_id();
    claim_name(ctx, &input.display_name, &id).await?;
    let now = ctx.clock.now().to_rfc3339();
    let g = GroupDoc {
        id,
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
    for m in &g.members {
        set_membership(ctx, &m.value, &g.id, Some(&g.display_name)).await?;
    }
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
    // Entra ID's probe (`displayName eq "..."`): the name index, one read.
    let by_name = q
        .filter
        .as_ref()
        .and_then(|f| filter::equality_on(f, "displayName"));
    let groups = match by_name {
        Some(name) => {
            match ctx
                .store
                .get_doc(DocSpace::Group, &name_key(&ctx.acct.id, name))
                .await?
            {
                Some(id) => match get_doc(ctx, &String::from_utf8_lossy(&id)).await {
                    Ok(g) => vec![g],
                    Err(e) if e.status == 404 => Vec::new(),
                    Err(e) => return Err(e),
                },
                None => Vec::new(),
            }
        }
        None => all(ctx).await?,
    };
    // Members' names only when members are shown.
    let shown = |a: &str| {
        a.eq_ignore_ascii_case("members") || a.to_ascii_lowercase().starts_with("members.")
    };
    let members_shown = (q.attributes.is_empty() || q.attributes.iter().any(|a| shown(a)))
        && !q.excluded.iter().any(|a| a.eq_ignore_ascii_case("members"));
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
        let ids: Vec<String> = if members_shown {
            g.members.iter().map(|m| m.value.clone()).collect()
        } else {
            Vec::new()
        };
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

/// Stores `g` (replacing `old`): its new name claimed first and the old
/// one given back after, then the records of the members whose groups
/// changed (all of them on a rename).
async fn store_change(ctx: &Ctx<'_>, old: &GroupDoc, mut g: GroupDoc) -> Result<GroupDoc> {
    let renamed = old.display_name != g.display_name;
    if renamed {
        claim_name(ctx, &g.display_name, &g.id).await?;
    }
    g.last_modified = ctx.clock.now().to_rfc3339();
    let json = serde_json::to_vec(&g).unwrap_or_default();
    ctx.store
        .put_doc(DocSpace::Group, &key(&ctx.acct.id, &g.id), &json, false)
        .await?;
    if renamed && !old.display_name.eq_ignore_ascii_case(&g.display_name) {
        release_name(ctx, &old.display_name, &g.id).await?;
    }
    let before: BTreeSet<&str> = old.members.iter().map(|m| m.value.as_str()).collect();
    let after: BTreeSet<&str> = g.members.iter().map(|m| m.value.as_str()).collect();
    let mut changed = 0usize;
    for id in before.difference(&after) {
        set_membership(ctx, id, &g.id, None).await?;
        changed += 1;
    }
    for id in &after {
        if renamed || !before.contains(id) {
            set_membership(ctx, id, &g.id, Some(&g.display_name)).await?;
            changed += 1;
        }
    }
    tracing::info!(target: "audit", event = "group_updated", source = "scim", account = %ctx.acct.id, group = %g.display_name, scim_id = %g.id, members = g.members.len(), users_changed = changed);
    Ok(g)
}

/// Writes `old` with this name, externalId and members, and answers the
/// group as now stored.
async fn update(
    ctx: &Ctx<'_>,
    old: &GroupDoc,
    display_name: String,
    external_id: Option<String>,
    members: Vec<Member>,
) -> Result<Response<Body>> {
    let mut g = old.clone();
    g.display_name = display_name;
    g.external_id = external_id;
    g.members = members;
    let g = store_change(ctx, old, g).await?;
    respond(ctx, &g, StatusCode::OK).await
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
    let members = input.members.unwrap_or_default();
    check_members(ctx, &members).await?;
    update(ctx, &old, input.display_name, input.external_id, members).await
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
    let members = input.members.unwrap_or_default();
    // Only the members added need checking.
    let known: BTreeSet<&str> = old.members.iter().map(|m| m.value.as_str()).collect();
    let added: Vec<Member> = members
        .iter()
        .filter(|m| !known.contains(m.value.as_str()))
        .cloned()
        .collect();
    check_members(ctx, &added).await?;
    update(ctx, &old, input.display_name, input.external_id, members).await
}

/// DELETE /Groups/{id}.
pub async fn delete(ctx: &Ctx<'_>, id: &str, want: Option<&str>) -> Result<Response<Body>> {
    let old = get_doc(ctx, id).await?;
    check_if_match(want, &version(&old))?;
    ctx.store
        .delete_doc(DocSpace::Group, &key(&ctx.acct.id, id))
        .await?;
    release_name(ctx, &old.display_name, id).await?;
    for m in &old.members {
        set_membership(ctx, &m.value, id, None).await?;
    }
    tracing::info!(target: "audit", event = "group_deleted", source = "scim", account = %ctx.acct.id, group = %old.display_name, scim_id = %id);
    let mut r = Response::new(crate::server::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// Takes a deleted user out of each of its groups.
pub async fn remove_member_everywhere(ctx: &Ctx<'_>, user: &UserRecord) -> Result<()> {
    let user_id = user::id_of(user);
    let ids = user
        .scim
        .as_ref()
        .map(|s| s.group_ids.clone())
        .unwrap_or_default();
    for gid in ids {
        let Ok(g) = get_doc(ctx, &gid).await else {
            continue;
        };
        let mut n = g.clone();
        n.members.retain(|m| m.value != user_id);
        if n.members.len() != g.members.len() {
            n.last_modified = ctx.clock.now().to_rfc3339();
            let json = serde_json::to_vec(&n).unwrap_or_default();
            ctx.store
                .put_doc(DocSpace::Group, &key(&ctx.acct.id, &n.id), &json, false)
                .await?;
        }
    }
    Ok(())
}

/// Records (`Some(name)`) or removes (`None`) user `user_id`'s membership of
/// group `gid` in its record, and applies what the account's rules make of
/// its groups now.
async fn set_membership(ctx: &Ctx<'_>, user_id: &str, gid: &str, name: Option<&str>) -> Result<()> {
    let Ok(mut u) = super::user_by_id(ctx, user_id).await else {
        // Gone meanwhile: nothing to record.
        return Ok(());
    };
    let f = u.scim.clone().unwrap_or_default();
    let mut pairs: Vec<(String, String)> = f
        .group_ids
        .iter()
        .cloned()
        .zip(f.groups.iter().cloned())
        .filter(|(id, _)| id != gid)
        .collect();
    if let Some(n) = name {
        pairs.push((gid.to_owned(), n.to_owned()));
    }
    let before = u.clone();
    let (ids, names): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
    apply_directory_groups(ctx, &mut u, names);
    if let Some(s) = u.scim.as_mut() {
        s.group_ids = ids;
    }
    if u == before {
        return Ok(());
    }
    u.updated_at = ctx.clock.now().to_rfc3339();
    if u.license == License::Licensed && u.vanity.is_none() {
        crate::provisioning::assign_vanities(ctx.store, std::slice::from_mut(&mut u)).await?;
    }
    ctx.store.put_users(std::slice::from_ref(&u)).await?;
    tracing::info!(target: "audit", event = "user_groups_changed", source = "scim", account = %ctx.acct.id, email = %u.email, groups = ?u.scim.as_ref().map(|s| &s.groups), license = u.license.as_str());
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
