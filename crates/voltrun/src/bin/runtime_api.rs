//! `voltrun-runtime-api`: the runtime process of a `provided` instance (SPEC §15). All of it
//! is [`voltrun_engine::runtime_api`]; this binary is kept apart from `voltrun` so an instance
//! starts a small program, not the server.

fn main() {
    voltrun_engine::runtime_api::main()
}
