//! Gatekeeper ConstraintTemplates and Constraints, evaluated with regorus the way OPA
//! Gatekeeper (and its `gator` CLI) evaluates them with its Rego engine.
//!
//! Code map:
//! - `object` (private): the Kubernetes object accessors (`apiVersion` as group / version,
//!   `kind`, `metadata.*`, missing fields read as `""`) and the Gatekeeper API group and
//!   target names; every module reads an object's type and identity through it.
//! - [`template`]: ConstraintTemplate parsing and Gatekeeper's template checks (target, kind /
//!   name, Rego source and version, CEL-only refusal, lib packages, allowed `data` refs).
//! - `rego_refs` (private): a Rego lexer for the `data` reference / import checks and the
//!   referential (`data.inventory`) detection.
//! - [`constraint`]: Constraint parsing, metadata checks, [`EnforcementAction`].
//! - `matcher` (private): `spec.match` and Gatekeeper's match semantics.
//! - `schema` (private): parameter validation and defaulting against the template's schema.
//! - [`review`]: `input.review` built from a plain object (as gator) or an `AdmissionReview`.
//! - [`inventory`]: `data.inventory` (cluster / namespace keyed) and the Namespace lookup.
//! - `deprecated` (private): OPA's deprecated built-ins (`any`, `all`, `re_match`, `set_diff`,
//!   `cast_*`, `net.cidr_overlap`) as regorus extensions for Rego v0 templates, and the Rego
//!   v1 refusal of their calls.
//! - [`policy`]: [`PolicySet`] — one regorus engine per template, compiled once, pooled per
//!   evaluation, bounded by an execution timer — and [`Violation`] / [`ReviewOutcome`].
//! - [`load`]: reading YAML/JSON files and directories into documents; the files as read
//!   ([`load::PolicyFile`]) are public so the webhook's revision covers exactly what loaded.
//! - `yaml` (private): the one reader of policy text — file size bound, YAML decoding with a
//!   bound on alias expansion.
//! - [`error`]: the one [`Error`] type with stable machine codes ([`Error::code`]).
//! - [`suite`], [`manifest`]: gator `verify` (Suite files) and gator `test` (manifests).
//!
//! Three directory walks look alike and differ on purpose, each following the reader it
//! reproduces, so they are not merged: [`load`] (policy files for the webhook: hidden
//! entries skipped — a ConfigMap volume's `..data/` copies — links followed, depth bounded),
//! [`suite`] (gator's `fs.WalkDir`: `.yaml`/`.yml` only, hidden folders included, links not
//! followed, recursive only for `DIR/...`) and [`manifest`] (gator's `filepath.Walk`:
//! `.yaml`/`.yml`/`.json`, hidden entries included, links not followed).
//!
//! Invariants: this crate knows nothing about HTTP or the CLI; a [`PolicySet`] is
//! `Send + Sync` and never mutated by a review; every Rego evaluation is time-bounded; a
//! template's Rego is parsed and compiled once, in [`PolicySet::add_template`].
#![forbid(unsafe_code)]

pub mod constraint;
mod deprecated;
pub mod error;
pub mod inventory;
pub mod load;
mod matcher;
mod object;
pub mod policy;
mod rego_refs;
pub mod review;
mod schema;
pub mod template;
mod yaml;

pub mod manifest;
pub mod suite;

pub use constraint::{Constraint, EnforcementAction};
pub use error::{Error, ErrorCode};
pub use inventory::Inventory;
pub use policy::{PolicySet, ReviewOutcome, Violation};
pub use review::Review;
pub use template::{RegoVersion, Template};
