//! The HTTP API, one module per part of the contract.

pub mod artifacts;
pub mod audit;
pub mod deployments;
pub mod ops;
pub mod tokens;
pub mod uploads;
