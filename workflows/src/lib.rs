//! The workflows this Tributary deployment runs. One module per workflow: its input and
//! output types, its step functions, and a `workflow()` that builds it.
//!
//! [`registry`] is what the `tributary` binary runs.

pub mod chain;
pub mod demo;
pub mod hello;
pub mod sources;

use tributary::workflow::{Error, Registry};

/// Every workflow of this deployment, validated.
///
/// # Errors
/// An invalid definition or a duplicate name.
pub fn registry() -> Result<Registry, Error> {
    let mut registry = Registry::default();
    registry
        .register(hello::workflow()?)?
        .register(demo::workflow()?)?
        .register(chain::workflow()?)?
        .register(sources::gdelt::workflow()?)?
        .register(sources::fred::workflow()?)?
        .register(sources::comtrade::workflow()?)?
        .register(sources::reliefweb::workflow()?)?
        .register(sources::worldbank::workflow()?)?;
    Ok(registry)
}
