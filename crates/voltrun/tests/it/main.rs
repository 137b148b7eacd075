//! Integration tests: the real `voltrun` binary, a real SQLite file, real node and python
//! processes, driven over HTTP.

mod harness;

mod api_auth;
mod api_functions;
mod api_inputs;
mod build_review;
mod builds;
mod builds_sandbox;
mod cli;
mod cli_deploy;
mod cli_versions;
mod custom_runtime;
mod egress;
mod egress_api;
mod engine_bookkeeping;
mod execution;
mod flow_review;
mod hardening_auth;
mod hardening_connections;
mod hardening_engine;
mod hardening_instance;
mod hardening_quotas;
mod hardening_review;
mod hardening_sandbox;
mod hardening_trigger;
mod hostile;
mod lambda_api;
mod layers;
mod oci_start;
mod openapi;
mod packages;
mod queue;
mod recovery;
mod scaleout;
mod secrets;
mod store_outage;
mod versions;
