//! Integration tests: the real `voltrun` binary, a real SQLite file, real node and python
//! processes, driven over HTTP.

mod harness;

mod api_auth;
mod api_functions;
mod api_inputs;
mod cli;
mod execution;
mod hardening_sandbox;
mod hardening_trigger;
mod hardening_auth;
mod hardening_connections;
mod hardening_engine;
mod hostile;
mod queue;
mod recovery;
mod scaleout;
mod hardening_quotas;
mod hardening_review;
mod hardening_instance;
mod openapi;
mod egress_api;
mod store_outage;
mod engine_bookkeeping;
mod egress;
