//! Black-box tests: the real server on a real socket, a real SQLite file in
//! a fresh temporary data dir, plain HTTP clients.

mod access;
mod api_fuzz;
mod artifacts;
mod cli;
mod crash;
mod deployments;
mod faults;
mod helpers;
mod limits;
mod object_store;
mod operations;
mod process;
mod rollout;
mod scale_out;
mod soak;
mod uploads;
mod workload;
