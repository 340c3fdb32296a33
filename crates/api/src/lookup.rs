//! Shared by the handler modules: the method check and the lookups of an item and a recovery
//! point that answer with Azure's not-found codes.

use axum::http::Method;
use rsvault_jobs::service::Service;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};
use rsvault_types::model::{self, Item, Vault};

pub(crate) fn only(m: &Method, allowed: &[Method]) -> ArmResult<()> {
    if allowed.contains(m) {
        Ok(())
    } else {
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Err(ArmError::new(
            ArmCode::MethodNotAllowed,
            format!(
                "The method {m} is not allowed here; use {}.",
                names.join(" or ")
            ),
        ))
    }
}

pub fn find_item(svc: &Service, vault: &Vault, container: &str, item: &str) -> ArmResult<Item> {
    let key = model::item_key(container, item);
    svc.get_item(vault, &key)?.ok_or_else(|| {
        ArmError::new(
            ArmCode::ItemNotFound,
            format!("Item '{item}' in container '{container}' is not protected in vault '{}' (it may have been deleted).", vault.vault.name),
        )
    })
}

pub(crate) fn find_rp(
    svc: &Service,
    vault: &Vault,
    it: &Item,
    rp: &str,
) -> ArmResult<model::RecoveryPoint> {
    svc.recovery_points(vault, &it.key())?
        .into_iter()
        .find(|p| p.id == rp)
        .ok_or_else(|| {
            ArmError::new(
                ArmCode::RecoveryPointNotFound,
                format!("Recovery point '{rp}' of item '{}' was not found.", it.name),
            )
        })
}
