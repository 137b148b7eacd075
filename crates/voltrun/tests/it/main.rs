//! Integration tests: the real `voltrun` binary, a real SQLite file, real node and python
//! processes, driven over HTTP.

mod harness;

mod api_auth;
mod api_functions;
mod api_inputs;
mod cli;
mod execution;
mod hostile;
mod queue;
mod recovery;
mod scaleout;
mod hardening_instance;
