//! The route table's types: what one served operation is. The table itself is `openapi::routes`
//! (with the authorization provider's routes from `auth`), which both the dispatcher and
//! `/openapi.json` read.

/// One served operation: method, path template (relative to the vault when `vault` is true),
/// operationId (Azure's where the operation is Azure's), success statuses, response model.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub ok: &'static [u16],
    pub model: Model,
    pub body: bool,
    pub query: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Model {
    None,
    Vault,
    VaultList,
    Job,
    JobList,
    OperationStatus,
    Resource,
    ResourceList,
    ExportResult,
    Object,
}
