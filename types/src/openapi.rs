//! OpenAPI schemas of the wire types whose JSON is not what their Rust shape says (IDs and
//! task tokens are strings, `JsonText` is any JSON document), for the `ToSchema` derives of
//! the API types (`--features openapi`, which the engine turns on for its document).
//!
//! It only describes: it must never change how a type is encoded.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

/// A non-empty string of at most `max_len` bytes (when given), said to be `description`.
pub(crate) fn string(description: &str, max_len: Option<usize>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
        .min_length(Some(1))
        .max_length(max_len)
        .into()
}

/// Any JSON document (object, array, string, number, boolean or null).
pub(crate) fn any_json(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some(description)).into()
}

/// `impl ToSchema` for a type that is a string on the wire.
macro_rules! string_schema {
    ($name:ty, $description:expr, $max_len:expr) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::openapi::string($description, $max_len)
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use string_schema;

impl utoipa::PartialSchema for crate::JsonText {
    fn schema() -> RefOr<Schema> {
        any_json("A JSON document, kept as the engine received it.")
    }
}
impl utoipa::ToSchema for crate::JsonText {}

string_schema!(
    crate::TaskToken,
    "An activity attempt's task token: opaque, as the engine handed it out (`<run>~<step>~<attempt>~<MAC>`).",
    None
);
