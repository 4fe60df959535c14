//! Discovery (RFC 7644 §4): `ServiceProviderConfig`, `Schemas`,
//! `ResourceTypes`, saying exactly what this server supports.

use serde_json::{Value, json};

use super::group::SCHEMA as GROUP;
use super::user::{CORE, ENTERPRISE, OURS};
use super::{MAX_BODY, MAX_COUNT, user::MAX_OPERATIONS};

/// `ServiceProviderConfig`.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/samlgate/samlgate#provisioning-with-okta--entra-id-scim",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A token of scope scim of this account (POST /api/v2/accounts/{id}/tokens on the admin listener), sent as Authorization: Bearer <token>.",
            "primary": true
        }],
        "maxPayloadSize": MAX_BODY,
        "maxOperations": MAX_OPERATIONS,
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        }
    })
}

/// How an attribute behaves (RFC 7643 §2.2 characteristics).
#[derive(Clone, Copy)]
struct Shape {
    multi: bool,
    required: bool,
    mutability: &'static str,
    uniqueness: &'static str,
    case_exact: bool,
}

const RW: Shape = Shape {
    multi: false,
    required: false,
    mutability: "readWrite",
    uniqueness: "none",
    case_exact: false,
};

fn attr(name: &str, kind: &str, shape: Shape, description: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": shape.multi,
        "description": description,
        "required": shape.required,
        "caseExact": shape.case_exact,
        "mutability": shape.mutability,
        "returned": "default",
        "uniqueness": shape.uniqueness,
    })
}

fn complex(
    name: &str,
    multi: bool,
    mutability: &'static str,
    description: &str,
    subs: Vec<Value>,
) -> Value {
    let shape = Shape {
        multi,
        mutability,
        ..RW
    };
    let mut a = attr(name, "complex", shape, description);
    if let Some(o) = a.as_object_mut() {
        o.insert("subAttributes".into(), Value::Array(subs));
    }
    a
}

fn schema(base: &str, id: &str, name: &str, description: &str, attributes: Vec<Value>) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// Every schema this server uses.
pub fn schemas(base: &str) -> Vec<Value> {
    let s = |n: &str, d: &str| attr(n, "string", RW, d);
    let user = schema(
        base,
        CORE,
        "User",
        "A user of the meeting platform",
        vec![
            attr(
                "userName",
                "string",
                Shape {
                    required: true,
                    uniqueness: "server",
                    ..RW
                },
                "The user's email address: the platform's key, unique across the gateway",
            ),
            complex(
                "name",
                false,
                "readWrite",
                "The user's name",
                vec![
                    s("givenName", "First name (at most 64 characters)"),
                    s("familyName", "Last name (at most 64 characters)"),
                    attr(
                        "formatted",
                        "string",
                        Shape {
                            mutability: "readOnly",
                            ..RW
                        },
                        "Given and family name",
                    ),
                ],
            ),
            s("displayName", "Name shown to people"),
            complex(
                "emails",
                true,
                "readWrite",
                "Email addresses",
                vec![
                    s("value", "The address"),
                    s("type", "work, home or other"),
                    attr("primary", "boolean", RW, "The primary address"),
                ],
            ),
            attr(
                "active",
                "boolean",
                RW,
                "Administrative switch: false deactivates the user and ends every live session at once",
            ),
            complex(
                "groups",
                true,
                "readOnly",
                "Groups the user is a member of",
                vec![
                    attr(
                        "value",
                        "string",
                        Shape {
                            mutability: "readOnly",
                            ..RW
                        },
                        "Group id",
                    ),
                    attr(
                        "$ref",
                        "reference",
                        Shape {
                            mutability: "readOnly",
                            ..RW
                        },
                        "Group URI",
                    ),
                    attr(
                        "display",
                        "string",
                        Shape {
                            mutability: "readOnly",
                            ..RW
                        },
                        "Group name",
                    ),
                    attr(
                        "type",
                        "string",
                        Shape {
                            mutability: "readOnly",
                            ..RW
                        },
                        "direct",
                    ),
                ],
            ),
            attr(
                "externalId",
                "string",
                Shape {
                    case_exact: true,
                    ..RW
                },
                "The client's id of the user",
            ),
        ],
    );
    let enterprise = schema(
        base,
        ENTERPRISE,
        "EnterpriseUser",
        "Enterprise user (department only)",
        vec![s("department", "Department")],
    );
    let ours = schema(
        base,
        OURS,
        "SamlgateUser",
        "What the meeting platform keeps of a user",
        vec![
            {
                let mut a = s("license", "basic, licensed or on_prem");
                if let Some(o) = a.as_object_mut() {
                    o.insert(
                        "canonicalValues".into(),
                        json!(["basic", "licensed", "on_prem"]),
                    );
                }
                a
            },
            attr(
                "features",
                "string",
                Shape { multi: true, ..RW },
                "Features the user may use",
            ),
            attr(
                "status",
                "string",
                Shape {
                    mutability: "readOnly",
                    ..RW
                },
                "active, pending_verification (waiting for email verification) or deactivated",
            ),
            attr(
                "vanityName",
                "string",
                Shape {
                    mutability: "readOnly",
                    uniqueness: "server",
                    ..RW
                },
                "Vanity name of a licensed user",
            ),
            attr(
                "ssoOnly",
                "boolean",
                Shape {
                    mutability: "readOnly",
                    ..RW
                },
                "Signs in through SSO only",
            ),
            attr(
                "source",
                "string",
                Shape {
                    mutability: "readOnly",
                    ..RW
                },
                "How the user was provisioned: jit, api, csv or scim",
            ),
        ],
    );
    let group = schema(
        base,
        GROUP,
        "Group",
        "A group of users; its name feeds the account's mapping rules",
        vec![
            attr(
                "displayName",
                "string",
                Shape {
                    required: true,
                    uniqueness: "server",
                    ..RW
                },
                "Group name, unique in the account",
            ),
            complex(
                "members",
                true,
                "readWrite",
                "Members (users)",
                vec![
                    attr(
                        "value",
                        "string",
                        Shape {
                            required: true,
                            mutability: "immutable",
                            case_exact: true,
                            ..RW
                        },
                        "User id",
                    ),
                    attr(
                        "$ref",
                        "reference",
                        Shape {
                            mutability: "immutable",
                            ..RW
                        },
                        "User URI",
                    ),
                    attr(
                        "display",
                        "string",
                        Shape {
                            mutability: "readOnly",
                            ..RW
                        },
                        "The user's userName",
                    ),
                    attr(
                        "type",
                        "string",
                        Shape {
                            mutability: "immutable",
                            ..RW
                        },
                        "User",
                    ),
                ],
            ),
            attr(
                "externalId",
                "string",
                Shape {
                    case_exact: true,
                    ..RW
                },
                "The client's id of the group",
            ),
        ],
    );
    vec![user, enterprise, ours, group]
}

/// Every resource type this server serves.
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "Users of the meeting platform",
            "schema": CORE,
            "schemaExtensions": [
                {"schema": ENTERPRISE, "required": false},
                {"schema": OURS, "required": false}
            ],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Groups of users",
            "schema": GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}
