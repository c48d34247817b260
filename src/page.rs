//! Lists, a page at a time, pure: a `limit`'s default and maxima and their
//! OpenAPI schemas, the same for every list. Each answer is `{items, next}`
//! (pass `next` as `cursor` for the next page; `null` on the last), and the
//! CLI follows the cursors with these sizes.

use serde::Serialize;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

/// A `limit` not given.
pub const DEFAULT_LIMIT: u64 = 50;
/// The most items of one page of a list in id order: keys, projects,
/// operators, webhooks.
pub const MAX_LIMIT: u64 = 100;
/// The most entries of one newest-first read: the admin trail, an
/// endpoint's deliveries, a project's recent validations.
pub const MAX_RECENT: u64 = 200;

/// The limit asked for, or [`DEFAULT_LIMIT`].
pub fn limit(asked: Option<u64>) -> u64 {
    asked.unwrap_or(DEFAULT_LIMIT)
}

fn limit_up_to(max: u64) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(max))
        .into()
}

/// A list's `limit`: 1 to [`MAX_LIMIT`].
pub fn limit_schema() -> Schema {
    limit_up_to(MAX_LIMIT)
}

/// A newest-first read's `limit`: 1 to [`MAX_RECENT`].
pub fn recent_schema() -> Schema {
    limit_up_to(MAX_RECENT)
}

/// [`limit_schema`] for parameters.
pub struct LimitDoc;

impl utoipa::PartialSchema for LimitDoc {
    fn schema() -> RefOr<Schema> {
        limit_schema().into()
    }
}

impl ToSchema for LimitDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "Limit".into()
    }
}

/// [`recent_schema`] for parameters.
pub struct RecentDoc;

impl utoipa::PartialSchema for RecentDoc {
    fn schema() -> RefOr<Schema> {
        recent_schema().into()
    }
}

impl ToSchema for RecentDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "RecentLimit".into()
    }
}

/// One page of a list, the same shape for every list: its items, and
/// where the next page begins.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page (for the
    /// admin trail: once it is read to its start).
    pub next: Option<String>,
}
