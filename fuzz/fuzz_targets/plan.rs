//! The task-plan parser on arbitrary bytes: a plan is rejected with a message or accepted
//! whole (classes in range, a finite positive budget, non-empty tasks covering every class).
//! The check itself is `tessera_scheduler::untrusted::plan`, which the committed corpus
//! (`fuzz/corpus/plan/`) also runs through in CI.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_scheduler::untrusted::plan(data));
