//! A migration that has landed is never edited again: a database that already ran it would not
//! run the new text (sqlx refuses a changed checksum at startup), so every change is a new
//! migration. This test holds the SHA-256 of each landed file; a new migration adds its line.

use sha2::{Digest, Sha256};

/// (path under crates/voltrun-store, SHA-256 of the file as it landed).
const LANDED: &[(&str, &str)] = &[
    ("migrations/0001_initial.sql", "5e0130b51044c5aa8c5b42bcf741bb5a4ba4e182091887ae9f970347f7091d55"),
    ("migrations/0002_queue_schedules_retries.sql", "7016d8a8e80bebc91b9b2ff15c771cdb6de3d000d0edae92cc9d87b5928f2fa3"),
    ("migrations/0003_execution_hours_and_partial_indexes.sql", "7d2d987a29746fe786bb72d5c4480b4d293e2ae60806b5bd3872b266a613ddb4"),
    ("migrations/0004_server_secrets.sql", "482cf25c9571a8cb40e5796ce1392ca8c64209669fe20b60994757e5758fdcb0"),
    ("migrations/0005_quotas_and_retention.sql", "88bb338943ebe2debb3a851b8ff81b7abeb0ef3b367fa66d711a36f74c16a546"),
    ("migrations/0006_queue_claim_covering_index.sql", "1e323c152c8dfa72d3bc752780fd952104b5a5e59ba6aef765c670d5b5ff1621"),
    ("migrations/0007_function_egress.sql", "74f08d24750f1b2ab623698892d8b352c77d38ef48c4ff4f99959887547097c6"),
    ("migrations/0008_packages_and_blobs.sql", "bde66c03b1c02dc9fe37524cf2cc84a08fe84781da4a4466acb993bfec22f47e"),
    ("migrations/0010_builds_and_function_states.sql", "4b3316f5209509a5672353c6139ccca7f301a5841ffb4686a5c7b40d5404127f"),
    ("migrations/0011_layers.sql", "eabdc0b316c1c6ee76f41b3687ef356057f9feb750f97dbfb9886c14c9fa0b5a"),
    ("migrations/0012_secrets.sql", "e950e3df210ef89f35d8256c01354ebb8ae87a7fa95178b6e5ce07027e2ae913"),
    ("migrations/0013_versions_and_aliases.sql", "ff716689011a2b86b8a3dacfd560001fc6685375c1879ae9fcc5862a7027f745"),
    ("migrations/0014_aws_keys.sql", "b2bb31107e635803bcbb102d70413a1c516507d224a6275016bb90cfbb1604f5"),
    ("migrations-postgres/1003_execution_hours_triggers.sql", "e59ed6ffb5ee96150706efbdadf81f4ec57e8ed77fce57f41a370071c827f8ce"),
    ("migrations-sqlite/1003_execution_hours_triggers.sql", "eae317d5eaca3b1af2624440aa70bbf740e504074fb3e432f453cbc4f1678388"),
];

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn landed_migrations_are_unchanged() {
    for (path, want) in LANDED {
        let bytes = std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e} (a landed migration was removed)"));
        let got = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(&got, want, "{path} was edited after it landed: put the change in a new migration");
    }
}

#[test]
fn every_migration_is_listed() {
    for dir in ["migrations", "migrations-postgres", "migrations-sqlite"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let name = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(LANDED.iter().any(|(p, _)| *p == name), "{name} is not in LANDED: add its SHA-256 (sha256sum) when it lands");
        }
    }
}
