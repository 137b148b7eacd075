-- AWS-style access keys for the Lambda API (SPEC §14, issue 17). An API key row gets a type:
-- `voltrun` (a bearer key, stored as its hash, as before) or `aws` (an access key id and a
-- secret access key). SigV4 needs the secret itself to recompute a signature, so an `aws`
-- key keeps it sealed under the master key (vault.rs, the key id bound in as associated
-- data), never in the clear; its `key_hash` holds `aws:<access key id>`, which no bearer
-- key's SHA-256 can equal. The account id in ARNs is derived from the user id (lambda
-- module, documented in docs/LAMBDA_API.md), so it needs no column.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

ALTER TABLE api_keys ADD COLUMN key_type TEXT NOT NULL DEFAULT 'voltrun';
ALTER TABLE api_keys ADD COLUMN access_key_id TEXT;
ALTER TABLE api_keys ADD COLUMN secret_sealed TEXT;
CREATE UNIQUE INDEX api_keys_access_key_id ON api_keys(access_key_id);
