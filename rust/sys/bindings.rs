// SPDX-License-Identifier: GPL-2.0
//! Raw C declarations produced by the module-local bindgen run over
//! `bindings.h` (see `Kbuild`). Private to the abstraction layer.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks
)]

include!("bindings_generated.rs");
