//! One integration binary: real Redis, real keyward, real sockets. Each
//! capability's tests are in the file named after it; find a capability
//! here, then its file.
//!
//! | capability | file |
//! |---|---|
//! | validating a key: each outcome, its status, its audit entry | `validate` |
//! | the validation path under hostile input (issue #30): refusals that stand, wrong-secret lock-out, bad stored hashes, a clock behind Redis's | `validate_hostile` |
//! | the validation rules against a reference model | `rules_model` |
//! | request decoding, property-tested | `fuzz` |
//! | rate limits: a key's per minute (one instance, the cluster), an operator's writes | `rate_limits` |
//! | usage plans: windows and credits spent on the validation path | `plan_spend` |
//! | usage plans: set, shown and topped up through the admin API | `plans` |
//! | the usage record (`GET /v1/admin/usage`): exact across instances and a restart, its buckets at boundaries, retention, faults | `usage` |
//! | the hot path's cost: Argon2id runs, the verified-secret cache, the queue, Redis commands per success, an OWASP-minimum burst | `hot_path` |
//! | verified secrets shared between instances (`KEYWARD_VERIFY_PEPPER_FILE`) | `verified_secrets` |
//! | key lifecycle: get, update, rotate, networks | `lifecycle` |
//! | forward auth (`/v1/auth`) and scopes | `forward_auth` |
//! | gRPC ext_authz, called directly | `ext_authz` |
//! | real gateways in front (nginx, Envoy, Caddy), over plain HTTP and mTLS | `gateways` |
//! | admin API: projects, mint, revoke, list, the admin token | `admin` |
//! | the admin plane under hostile input (issue #37): sizes, methods, quotas, stored text | `admin_hostile` |
//! | operators and roles | `operators` |
//! | the audit trail under floods: budgets and summaries | `audit` |
//! | the admin CLI | `cli` |
//! | the console (`/admin/`) and the activity endpoint | `console` |
//! | webhooks end to end; under faults | `webhooks`; `webhook_faults` |
//! | the OpenAPI document against the service | `openapi` |
//! | ARCHITECTURE.md's checkable claims against the code | `architecture` |
//! | the docs: every link resolves, every shell block is run or marked not run | `docs` |
//! | ACL-isolated deployments | `isolation` |
//! | adopting the original service's data; `keyward migrate` | `legacy` |
//! | health, metrics, least privilege, secrets hygiene, start-up and shutdown | `ops` |
//! | Redis faults: outages, slowness, SIGTERM, the failsafe; the fault matrix; writes left behind | `faults`; `fault_matrix`; `fault_background` |
//! | Redis Cluster | `cluster` |
//! | TLS to Redis and on the listener; Redis on a Unix socket | `tls`; `unix` |
//!
//! Support code: `helpers` is the harness: [`helpers::TestApp`] (keyward in
//! this process) and [`helpers::Binary`] (a process of its own, for its
//! metrics, logs, signals or clock) both deref to one typed
//! [`helpers::Client`], whose calls take the status they expect; a
//! [`helpers::Clock`] sets a `Binary`'s time, so no test waits for a minute
//! to turn. `browser` drives the console's Chromium, `proxy` cuts Redis
//! connections on demand. Timing and memory figures are benches' (`make
//! load`), never bounds asserted here.

mod admin;
mod admin_hostile;
mod architecture;
mod audit;
mod browser;
mod catalog;
mod cli;
mod cluster;
mod console;
mod docs;
mod ext_authz;
mod fault_background;
mod fault_matrix;
mod faults;
mod forward_auth;
mod fuzz;
mod gateways;
mod helpers;
mod hot_path;
mod isolation;
mod legacy;
mod lifecycle;
mod openapi;
mod operators;
mod ops;
mod plan_spend;
mod plans;
mod proxy;
mod rate_limits;
mod rules_model;
mod tls;
mod unix;
mod usage;
mod validate;
mod validate_hostile;
mod verified_secrets;
mod webhook_faults;
mod webhooks;
